//! Serving benchmark: the inferpool agent against llama.cpp's own server (continuous
//! batching with 16 parallel slots), same GGUF, same 2 threads, driven by the same load
//! generator over loopback HTTP (streaming chat completions). One server runs at a time so
//! they never share the cores. Prints single-stream decode and prompt tokens/s, TTFT, and
//! aggregate output tokens/s with p50/p99 latency at 1, 4 and 16 concurrent streams, and
//! peak RSS, side by side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use inferpool_bench::{mib, proc_stats, quantile};
use inferpool_e2e::http::{EventStream, free_port, get};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The inferpool-agent binary (release build).
    #[arg(long)]
    agent: PathBuf,
    /// The llama-server binary.
    #[arg(long)]
    llama_server: PathBuf,
    /// The GGUF both serve.
    #[arg(long)]
    model: PathBuf,
    /// Threads for both.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

const MODEL: &str = "smollm2";
/// Concurrency, requests in all, tokens per request.
const SCENARIOS: [(usize, usize, u32); 3] = [(1, 4, 128), (4, 8, 64), (16, 32, 64)];

struct Server {
    name: &'static str,
    child: Child,
    http: SocketAddr,
    _dir: inferpool_e2e::parts::ScratchDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_inferpool(args: &Args) -> anyhow::Result<Server> {
    let dir = inferpool_e2e::parts::ScratchDir::new("bench-agent")?;
    let (http, grpc) = (free_port()?, free_port()?);
    // The response cache is off: the benchmark compares generation, not replays.
    let config = json!({"servedName": MODEL, "modelPath": args.model,
        "httpPort": http.port(), "grpcPort": grpc.port(), "batching": {"maxBatchSize": 16},
        "cache": {"enabled": false}});
    let path = dir.path().join("agent.json");
    std::fs::write(&path, config.to_string())?;
    let child = Command::new(&args.agent)
        .args(["serve", "--host", "127.0.0.1", "--config"])
        .arg(&path)
        .env("RAYON_NUM_THREADS", args.threads.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server {
        name: "inferpool",
        child,
        http,
        _dir: dir,
    };
    until_ready(&server, "/readyz")?;
    Ok(server)
}

fn start_llama(args: &Args) -> anyhow::Result<Server> {
    let dir = inferpool_e2e::parts::ScratchDir::new("bench-llama")?;
    let http = free_port()?;
    let threads = args.threads.to_string();
    let child = Command::new(&args.llama_server)
        .arg("-m")
        .arg(&args.model)
        .args(["--host", "127.0.0.1", "--port", &http.port().to_string()])
        .args([
            "-t", &threads, "-tb", &threads, "-np", "16", "-c", "16384", "-a", MODEL,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server {
        name: "llama.cpp",
        child,
        http,
        _dir: dir,
    };
    until_ready(&server, "/health")?;
    Ok(server)
}

fn until_ready(server: &Server, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if matches!(get(server.http, path), Ok((200, _))) {
            return Ok(());
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
    anyhow::bail!("{} did not become ready", server.name)
}

/// One streamed request's timings.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ttft: Duration,
    total: Duration,
    tokens: usize,
    prompt_tokens: usize,
    decode: Duration,
}

fn one_request(http: SocketAddr, id: usize, max_tokens: u32) -> anyhow::Result<Sample> {
    let body = json!({"model": MODEL, "temperature": 0, "max_tokens": max_tokens, "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": format!(
            "Request {id}: write a long, detailed story about a lighthouse keeper named {}.",
            ["Ada", "Bo", "Cy", "Di", "Ed", "Fay", "Gus", "Hal"][id % 8])}]});
    let start = Instant::now();
    let mut stream = EventStream::open(http, "/v1/chat/completions", &body)?;
    let (mut first, mut last, mut chunks, mut usage) = (None, None, 0, Value::Null);
    while let Some(data) = stream.next_data()? {
        if data == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(&data)?;
        let content = event["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap_or_default();
        if !content.is_empty() {
            let now = start.elapsed();
            first.get_or_insert(now);
            last = Some(now);
            chunks += 1;
        }
        if !event["usage"].is_null() {
            usage = event["usage"].clone();
        }
    }
    let total = start.elapsed();
    let ttft = first.unwrap_or(total);
    let tokens = usage["completion_tokens"]
        .as_u64()
        .map_or(chunks, |n| n as usize);
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap_or(0) as usize;
    Ok(Sample {
        ttft,
        total,
        tokens,
        prompt_tokens,
        decode: last.unwrap_or(ttft) - ttft,
    })
}

/// Results of one scenario.
struct Run {
    samples: Vec<Sample>,
    wall: Duration,
}

fn scenario(
    http: SocketAddr,
    concurrency: usize,
    requests: usize,
    max_tokens: u32,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let per_client = requests / concurrency;
    let clients: Vec<_> = (0..concurrency)
        .map(|c| {
            std::thread::spawn(move || -> anyhow::Result<Vec<Sample>> {
                (0..per_client)
                    .map(|k| one_request(http, c * per_client + k, max_tokens))
                    .collect()
            })
        })
        .collect();
    let mut samples = Vec::new();
    for client in clients {
        samples.extend(
            client
                .join()
                .map_err(|_| anyhow::anyhow!("client panicked"))??,
        );
    }
    Ok(Run {
        samples,
        wall: start.elapsed(),
    })
}

/// Figures of one server.
#[derive(Debug, Default, Clone)]
struct Figures {
    rows: Vec<(String, f64)>,
}

fn measure(server: &Server) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    one_request(server.http, 99, 8)?; // warm caches and code paths
    for (concurrency, requests, max_tokens) in SCENARIOS {
        let run = scenario(server.http, concurrency, requests, max_tokens)?;
        let s = &run.samples;
        let tokens: usize = s.iter().map(|x| x.tokens).sum();
        let ttfts: Vec<Duration> = s.iter().map(|x| x.ttft).collect();
        let totals: Vec<Duration> = s.iter().map(|x| x.total).collect();
        let ms = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        if concurrency == 1 {
            let decode: f64 = s
                .iter()
                .map(|x| (x.tokens.saturating_sub(1)) as f64 / x.decode.as_secs_f64().max(1e-9))
                .sum::<f64>()
                / s.len() as f64;
            let prompt: f64 = s
                .iter()
                .map(|x| x.prompt_tokens as f64 / x.ttft.as_secs_f64().max(1e-9))
                .sum::<f64>()
                / s.len() as f64;
            f.rows.push(("single-stream decode tok/s".into(), decode));
            f.rows.push(("single-stream prompt tok/s".into(), prompt));
        }
        let c = concurrency;
        f.rows.push((
            format!("c={c} aggregate output tok/s"),
            tokens as f64 / run.wall.as_secs_f64(),
        ));
        f.rows
            .push((format!("c={c} TTFT p50 ms"), ms(quantile(&ttfts, 0.5))));
        f.rows
            .push((format!("c={c} TTFT p99 ms"), ms(quantile(&ttfts, 0.99))));
        f.rows
            .push((format!("c={c} latency p50 ms"), ms(quantile(&totals, 0.5))));
        f.rows
            .push((format!("c={c} latency p99 ms"), ms(quantile(&totals, 0.99))));
    }
    let peak = proc_stats(server.child.id())?.peak_rss_bytes;
    f.rows.push(("peak RSS MiB".into(), mib(peak)));
    Ok(f)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ours = measure(&start_inferpool(&args)?)?;
    let reference = measure(&start_llama(&args)?)?;
    println!("| metric | inferpool | llama.cpp server | inferpool / llama.cpp |");
    println!("|---|---:|---:|---:|");
    for ((name, a), (_, b)) in ours.rows.iter().zip(&reference.rows) {
        println!("| {name} | {a:.1} | {b:.1} | {:.2} |", a / b.max(1e-9));
    }
    Ok(())
}
