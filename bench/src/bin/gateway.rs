//! Gateway overhead: the same load sent (a) straight to one agent, (b) through the inferpool
//! gateway (`inferpool-operator local --agent`, round robin) and (c) through nginx as a
//! plain round-robin proxy to the same two agents, in one run. Requests are ones the agent
//! answers fast (`max_tokens: 1`): `cached` ones repeat a greedy request, which the agents'
//! response cache answers without the engine (so the proxy's own cost shows), `generated`
//! ones sample one token each. Prints latency p50/p99 at one request at a time, the
//! latency each proxy adds, and the most requests/s with many clients, side by side.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use inferpool_bench::drivers::{Load, LoadTools, Measured};
use inferpool_bench::grpc_hop::grpc_latencies;
use inferpool_bench::keepalive::Connection;
use inferpool_bench::process::{self, Process};
use inferpool_bench::{quantile, tree_cpu_seconds};
use inferpool_e2e::http::free_port;
use inferpool_e2e::parts::ScratchDir;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-agent binary (release build).
    #[arg(long)]
    agent: PathBuf,
    /// The inferpool-operator binary (release build).
    #[arg(long)]
    operator: PathBuf,
    /// The nginx binary.
    #[arg(long)]
    nginx: PathBuf,
    /// The GGUF the agents serve.
    #[arg(long)]
    model: PathBuf,
    /// Requests one at a time, per target and workload (the latency figures).
    #[arg(long, default_value_t = 2000)]
    sequential: usize,
    /// Clients at once for the throughput figure.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of the throughput run, per target and workload.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds over every path, the paths taking turns (so that the machine's drifts touch
    /// them alike); each figure is reported as its median over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// The folder of `bench/load-tools-fetch` (wrk and h2load): with it, every path is
    /// also driven by wrk over HTTP/1.1, and the proxies by h2load over HTTP/2.
    #[arg(long)]
    load_tools: Option<PathBuf>,
    /// Only this workload (both when absent).
    #[arg(long, value_enum)]
    workload: Option<Workload>,
}

const MODEL: &str = "smollm2";

/// The longest a server of this benchmark may take to answer its readiness check.
const READY: Duration = Duration::from_secs(120);

/// Waits until `GET path` on `addr` answers 200.
fn until_ready(addr: SocketAddr, path: &str, what: &str) -> anyhow::Result<()> {
    process::until_ready(addr, path, READY)
        .with_context(|| format!("{what} did not become ready"))?;
    Ok(())
}

/// An agent: (process, HTTP address, gRPC address). One engine thread each, so that two
/// agents share the two cores.
fn start_agent(args: &Args) -> anyhow::Result<(Process, SocketAddr, SocketAddr)> {
    let dir = ScratchDir::new("bench-gw-agent")?;
    let (http, grpc) = (free_port()?, free_port()?);
    let config = json!({"servedName": MODEL, "modelPath": args.model,
        "httpPort": http.port(), "grpcPort": grpc.port()});
    let path = dir.path().join("agent.json");
    std::fs::write(&path, config.to_string())?;
    let child = Command::new(&args.agent)
        .args(["serve", "--host", "127.0.0.1", "--config"])
        .arg(&path)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process::new(child, dir);
    until_ready(http, "/readyz", "the agent")?;
    Ok((process, http, grpc))
}

/// The inferpool gateway over the agents at `agents` (gRPC and HTTP addresses), round
/// robin like nginx.
fn start_gateway(
    args: &Args,
    agents: &[(SocketAddr, SocketAddr)],
) -> anyhow::Result<(Process, SocketAddr)> {
    let dir = ScratchDir::new("bench-gw")?;
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: bench\n\
         spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 2\n  \
         routing:\n    strategy: round_robin\n"
    );
    let file = dir.path().join("pool.yaml");
    std::fs::write(&file, manifest)?;
    let addr = free_port()?;
    let mut command = Command::new(&args.operator);
    command
        .args(["local", "--addr", &addr.to_string(), "-f"])
        .arg(&file);
    for (grpc, http) in agents {
        command.args(["--agent", &format!("{grpc},{http}")]);
    }
    let child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process::new(child, dir);
    until_ready(addr, "/healthz", "the gateway")?;
    until_answers(addr)?;
    Ok((process, addr))
}

/// nginx as a round-robin proxy with kept-alive upstream connections to the agents' HTTP:
/// the process, its HTTP/1.1 address and its HTTP/2 (prior knowledge) address.
fn start_nginx(
    nginx: &Path,
    http: &[SocketAddr],
) -> anyhow::Result<(Process, SocketAddr, SocketAddr)> {
    let dir = ScratchDir::new("bench-nginx")?;
    let (addr, h2) = (free_port()?, free_port()?);
    let servers: String = http.iter().map(|a| format!("    server {a};\n")).collect();
    let conf = format!(
        "worker_processes 2;\ndaemon off;\npid nginx.pid;\nerror_log stderr error;\n\
         events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path tmp;\n  proxy_temp_path tmp;\n  fastcgi_temp_path tmp;\n  \
         uwsgi_temp_path tmp;\n  scgi_temp_path tmp;\n  upstream agents {{\n{servers}    \
         keepalive 128;\n  }}\n  server {{\n    listen {addr};\n    listen {h2} http2;\n    location / {{\n      \
         proxy_pass http://agents;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    std::fs::create_dir_all(dir.path().join("tmp"))?;
    std::fs::write(dir.path().join("nginx.conf"), conf)?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .args(["-c", "nginx.conf", "-e", "stderr"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process::new(child, dir);
    until_ready(addr, "/healthz", "nginx")?;
    Ok((process, addr, h2))
}

/// Waits until a chat request is answered (the gateway has its agents' first reports).
fn until_answers(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = body(Workload::Cached);
    while Instant::now() < deadline {
        let answered =
            Connection::open(addr).and_then(|mut c| c.post("/v1/chat/completions", &body));
        if matches!(answered, Ok(200)) {
            return Ok(());
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    anyhow::bail!("{addr} never answered a chat request")
}

/// The request body of a workload.
fn body(workload: Workload) -> Vec<u8> {
    let temperature = match workload {
        Workload::Cached => 0.0,
        Workload::Generated => 1.0,
    };
    json!({"model": MODEL, "max_tokens": 1, "temperature": temperature,
        "messages": [{"role": "user", "content": "Say yes."}]})
    .to_string()
    .into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Cached,
    Generated,
}

/// Latencies of `n` requests sent one at a time over one connection.
fn latencies(addr: SocketAddr, body: &[u8], n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut conn = Connection::open(addr)?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let status = conn.post("/v1/chat/completions", body)?;
        samples.push(start.elapsed());
        anyhow::ensure!(status == 200, "answered {status}");
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Requests per second answered 200 with `clients` kept-alive connections for `seconds`.
fn throughput(addr: SocketAddr, body: &[u8], clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let (stop, done, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, failed, body) =
                (stop.clone(), done.clone(), failed.clone(), body.to_vec());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = Connection::open(addr)?;
                while !stop.load(Ordering::Relaxed) {
                    let ok = conn.post("/v1/chat/completions", &body)? == 200;
                    let counter = if ok { &done } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::park_timeout(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} requests were not answered 200");
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

struct Figures {
    p50: Duration,
    p99: Duration,
    rps: f64,
    /// CPU per request answered in the throughput run: the proxy's and the agents'.
    proxy_cpu: Duration,
    agents_cpu: Duration,
    /// The agents' CPU per request one at a time (no batching of wake-ups).
    agents_cpu_sequential: Duration,
}

impl Figures {
    /// Each figure's median over `rounds` (figure by figure).
    fn median(rounds: &[Figures]) -> Figures {
        let duration = |figure: fn(&Figures) -> Duration| {
            Duration::from_secs_f64(median_of(rounds, |r| figure(r).as_secs_f64()))
        };
        Figures {
            p50: duration(|r| r.p50),
            p99: duration(|r| r.p99),
            rps: median_of(rounds, |r| r.rps),
            proxy_cpu: duration(|r| r.proxy_cpu),
            agents_cpu: duration(|r| r.agents_cpu),
            agents_cpu_sequential: duration(|r| r.agents_cpu_sequential),
        }
    }
}

/// The median of `figure` over `rounds` (the lower one of two middles; 0 when empty).
fn median_of(rounds: &[Figures], figure: impl Fn(&Figures) -> f64) -> f64 {
    let mut values: Vec<f64> = rounds.iter().map(figure).collect();
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// Where a path's requests go, and which processes' CPU time they cost.
struct Target {
    addr: SocketAddr,
    proxy: Option<u32>,
    agents: [u32; 2],
}

impl Target {
    /// CPU seconds so far: the proxy's (0 without one) and the agents'.
    fn cpu_seconds(&self) -> (f64, f64) {
        let proxy = self.proxy.map_or(0.0, tree_cpu_seconds);
        (
            proxy,
            self.agents.iter().copied().map(tree_cpu_seconds).sum(),
        )
    }
}

fn measure(path: &Target, workload: Workload, args: &Args) -> anyhow::Result<Figures> {
    let addr = path.addr;
    let body = body(workload);
    let sequential = match workload {
        Workload::Cached => args.sequential,
        Workload::Generated => args.sequential / 10,
    };
    latencies(addr, &body, 50)?; // warm-up: connections, caches
    let (_, agents_before) = path.cpu_seconds();
    let samples = latencies(addr, &body, sequential)?;
    let (_, agents_after) = path.cpu_seconds();
    let agents_cpu_sequential = per_request_cpu(agents_after - agents_before, sequential as f64);
    let q = |p| quantile(&samples, p).unwrap_or_default();
    let (proxy_before, agents_before) = path.cpu_seconds();
    let start = Instant::now();
    let rps = throughput(addr, &body, args.clients, args.seconds)?;
    let answered = rps * start.elapsed().as_secs_f64();
    let (proxy_after, agents_after) = path.cpu_seconds();
    let per_request = |cpu: f64| per_request_cpu(cpu, answered);
    Ok(Figures {
        p50: q(0.5),
        p99: q(0.99),
        rps,
        proxy_cpu: per_request(proxy_after - proxy_before),
        agents_cpu: per_request(agents_after - agents_before),
        agents_cpu_sequential,
    })
}

/// `cpu` seconds spread over `requests`.
fn per_request_cpu(cpu: f64, requests: f64) -> Duration {
    Duration::from_secs_f64(cpu.max(0.0) / requests.max(1.0))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The medians of each path's rounds, then each round's requests/s.
fn report(workload: Workload, paths: &[(&str, Target)], rounds: &[Vec<Figures>]) {
    let rows: Vec<(&str, Figures)> = paths
        .iter()
        .zip(rounds)
        .map(|((name, _), figures)| (*name, Figures::median(figures)))
        .collect();
    let n = rounds.first().map_or(0, Vec::len);
    println!("\n{workload:?} requests (max_tokens 1), median of {n} round(s):");
    println!(
        "| path | p50 µs | p99 µs | added p50 µs | added p99 µs | requests/s | proxy CPU µs/req | agents CPU µs/req | agents CPU µs/req, one at a time |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let (base50, base99) = (micros(rows[0].1.p50), micros(rows[0].1.p99));
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            micros(f.p50),
            micros(f.p99),
            micros(f.p50) - base50,
            micros(f.p99) - base99,
            f.rps,
            micros(f.proxy_cpu),
            micros(f.agents_cpu),
            micros(f.agents_cpu_sequential),
        );
    }
    if n > 1 {
        for ((name, _), figures) in paths.iter().zip(rounds) {
            let each: Vec<String> = figures.iter().map(|f| format!("{:.0}", f.rps)).collect();
            let added: Vec<String> = figures
                .iter()
                .zip(&rounds[0])
                .map(|(f, base)| format!("{:.0}", micros(f.p50) - micros(base.p50)))
                .collect();
            println!(
                "{name}: requests/s by round {}; added p50 µs by round {}",
                each.join(" / "),
                added.join(" / ")
            );
        }
        paired_ratio(paths, rounds);
    }
}

/// The gateway's requests/s over nginx's, round by round (each pair ran back to back, so
/// the machine's drifts touch both alike), and the median of those ratios.
fn paired_ratio(paths: &[(&str, Target)], rounds: &[Vec<Figures>]) {
    let [_, (gateway, _), (nginx, _)] = paths else {
        return;
    };
    let mut ratios: Vec<f64> = rounds[1]
        .iter()
        .zip(&rounds[2])
        .map(|(g, n)| g.rps / n.rps.max(1.0))
        .collect();
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len().saturating_sub(1) / 2).copied();
    println!(
        "{gateway} / {nginx} requests/s by round: {}; median {:.2}",
        each.join(" / "),
        median.unwrap_or_default()
    );
}

/// Every path driven by wrk (HTTP/1.1) and the proxies in `h2` (name, HTTP/2 address) by
/// h2load, one after another, with the throughput run's clients and time; one table.
fn drive_externally(
    tools: &LoadTools,
    paths: &[(&str, Target)],
    h2: &[(&str, SocketAddr)],
    workload: Workload,
    args: &Args,
) -> anyhow::Result<()> {
    let scratch = ScratchDir::new("bench-gw-load")?;
    let body = body(workload);
    let load = |addr| Load {
        addr,
        path: "/v1/chat/completions",
        body: &body,
        clients: args.clients,
        seconds: args.seconds,
    };
    let mut rows: Vec<(&str, &str, Measured)> = Vec::new();
    for (name, target) in paths {
        rows.push((
            name,
            "wrk, HTTP/1.1",
            tools.wrk(load(target.addr), scratch.path())?,
        ));
    }
    for (name, addr) in h2 {
        rows.push((
            name,
            "h2load, HTTP/2",
            tools.h2load(load(*addr), scratch.path())?,
        ));
    }
    println!(
        "\n{workload:?} requests driven by wrk and h2load ({} connections, {} s; h2load gives \
         the mean and the slowest request in place of p50 and p99):",
        args.clients, args.seconds
    );
    println!("| path | driver | requests/s | p50 µs | p99 µs |\n|---|---|---:|---:|---:|");
    for (name, driver, m) in rows {
        let (p50, p99) = (micros(m.p50), micros(m.p99));
        println!("| {name} | {driver} | {:.0} | {p50:.0} | {p99:.0} |", m.rps);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (a0, http0, grpc0) = start_agent(&args)?;
    let (a1, http1, grpc1) = start_agent(&args)?;
    let (gateway, gateway_addr) = start_gateway(&args, &[(grpc0, http0), (grpc1, http1)])?;
    let (nginx, nginx_addr, nginx_h2) = start_nginx(&args.nginx, &[http0, http1])?;
    let agents = [a0.child.id(), a1.child.id()];
    let paths = [
        (
            "direct to one agent",
            Target {
                addr: http0,
                proxy: None,
                agents,
            },
        ),
        (
            "inferpool gateway",
            Target {
                addr: gateway_addr,
                proxy: Some(gateway.child.id()),
                agents,
            },
        ),
        (
            "nginx round robin",
            Target {
                addr: nginx_addr,
                proxy: Some(nginx.child.id()),
                agents,
            },
        ),
    ];
    println!(
        "gateway overhead: {} sequential requests per path, then {} clients for {} s",
        args.sequential, args.clients, args.seconds
    );
    let workloads = match args.workload {
        Some(one) => vec![one],
        None => vec![Workload::Cached, Workload::Generated],
    };
    for workload in workloads {
        let mut rounds: Vec<Vec<Figures>> = paths.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            // The two proxies take turns at going first, so that neither always follows
            // the same path.
            let order = if round % 2 == 0 { [0, 1, 2] } else { [0, 2, 1] };
            for i in order {
                rounds[i].push(measure(&paths[i].1, workload, &args)?);
            }
        }
        report(workload, &paths, &rounds);
        if let Some(tools) = &args.load_tools {
            let tools = LoadTools::new(tools.clone());
            let h2 = [("inferpool gateway", paths[1].1.addr), ("nginx", nginx_h2)];
            drive_externally(&tools, &paths, &h2, workload, &args)?;
        }
    }
    let agents_before: f64 = agents.iter().copied().map(tree_cpu_seconds).sum();
    let hop = grpc_latencies(grpc0, MODEL, args.sequential)?;
    let agents_after: f64 = agents.iter().copied().map(tree_cpu_seconds).sum();
    let hop_cpu = per_request_cpu(agents_after - agents_before, (args.sequential + 50) as f64);
    println!(
        "\nThe gRPC agent hop alone (cached `Generate` as the gateway sends streamed requests, \
         one at a time): p50 {:.0} µs, p99 {:.0} µs, agent CPU {:.0} µs/req",
        micros(quantile(&hop, 0.5).unwrap_or_default()),
        micros(quantile(&hop, 0.99).unwrap_or_default()),
        micros(hop_cpu),
    );
    Ok(())
}
