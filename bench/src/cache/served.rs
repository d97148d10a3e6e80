//! The filled cache's snapshot loaded by a real agent: how long the agent took to load it,
//! and exact and semantic hits timed one request at a time at the agent's HTTP API and
//! through the gateway (`inferpool-operator local --agent`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inferpool_e2e::http::{cache_header, free_port, post};
use inferpool_e2e::parts::ScratchDir;
use serde_json::{Value, json};

use super::filled::{PARAPHRASE, PROBE, body};
use super::percentiles;
use crate::keepalive::Connection;
use crate::process::{Process, until_ready};

/// What the served part needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// inferpool-agent.
    pub agent: PathBuf,
    /// inferpool-operator.
    pub operator: PathBuf,
    /// The GGUF.
    pub model: PathBuf,
    /// The embedding model's directory.
    pub embedding: PathBuf,
}

/// The longest an agent may take to load its models and the snapshot.
const READY: Duration = Duration::from_secs(300);

/// An agent serving `model` as `name` whose cache directory holds the snapshot.
fn start_agent(
    b: &Binaries,
    name: &str,
    cache_dir: &Path,
) -> anyhow::Result<(Process, SocketAddr, SocketAddr, Duration)> {
    let dir = ScratchDir::new("bench-cache-agent")?;
    let (http, grpc) = (free_port()?, free_port()?);
    let config = json!({"servedName": name, "modelPath": b.model, "httpPort": http.port(),
        "grpcPort": grpc.port(), "cacheDir": cache_dir,
        "cache": {"capacity": "4Gi", "semantic": {"enabled": true},
            "memoryPressure": {"highWatermark": 1.0, "lowWatermark": 1.0},
            "persistence": {"enabled": true, "snapshotSeconds": 86400}}});
    let path = dir.path().join("agent.json");
    std::fs::write(&path, config.to_string())?;
    let child = Command::new(&b.agent)
        .args(["serve", "--host", "127.0.0.1", "--config"])
        .arg(&path)
        .arg("--embedding-model")
        .arg(&b.embedding)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process::new(child, dir);
    let took = until_ready(http, "/readyz", READY)?;
    Ok((process, http, grpc, took))
}

fn start_gateway(
    b: &Binaries,
    name: &str,
    agent: (SocketAddr, SocketAddr),
) -> anyhow::Result<(Process, SocketAddr)> {
    let dir = ScratchDir::new("bench-cache-gw")?;
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: bench\n\
         spec:\n  model:\n    source: bundled\n    servedName: {name}\n  replicas: 1\n"
    );
    let file = dir.path().join("pool.yaml");
    std::fs::write(&file, manifest)?;
    let addr = free_port()?;
    let child = Command::new(&b.operator)
        .args(["local", "--addr", &addr.to_string(), "-f"])
        .arg(&file)
        .args(["--agent", &format!("{},{}", agent.1, agent.0)])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process::new(child, dir);
    until_ready(addr, "/healthz", READY)?;
    Ok((process, addr))
}

/// The `x-inferpool-cache` of one request, to check what the timed ones are.
fn kind_of(addr: SocketAddr, body: &Value) -> anyhow::Result<String> {
    let reply = post(
        addr,
        "/v1/chat/completions",
        &[],
        body.to_string().as_bytes(),
    )?;
    anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
    Ok(cache_header(&reply.head))
}

fn timed(addr: SocketAddr, body: &Value, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut connection = Connection::open(addr)?;
    let bytes = body.to_string().into_bytes();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let status = connection.post("/v1/chat/completions", &bytes)?;
        samples.push(t.elapsed());
        anyhow::ensure!(status == 200, "status {status}");
    }
    Ok(samples)
}

/// Starts the agent on the snapshot in `cache_dir` and prints the hit latencies.
pub fn report(b: &Binaries, name: &str, cache_dir: &Path, requests: usize) -> anyhow::Result<()> {
    let (agent, http, grpc, ready) = start_agent(b, name, cache_dir)?;
    let (_gateway, gw) = start_gateway(b, name, (http, grpc))?;
    let rss = crate::proc_stats(agent.child.id())?.rss_bytes;
    println!("\n## The snapshot served by an agent\n");
    println!(
        "agent ready after {:.1} s (model, embedding model and snapshot loaded); RSS {:.0} MiB\n",
        ready.as_secs_f64(),
        crate::mib(rss)
    );
    println!("| hit | path | requests | p50 / p99 ms |\n|---|---|---|---|");
    let (exact, semantic) = (body(name, PROBE), body(name, PARAPHRASE));
    for (label, addr) in [("agent HTTP", http), ("gateway", gw)] {
        for (kind, request) in [("exact", &exact), ("semantic", &semantic)] {
            let seen = kind_of(addr, request)?;
            anyhow::ensure!(seen == kind, "{label}: expected a {kind} hit, got {seen:?}");
            let samples = timed(addr, request, requests)?;
            println!(
                "| {kind} | {label} | {requests} | {} |",
                percentiles(&samples)
            );
        }
    }
    Ok(())
}
