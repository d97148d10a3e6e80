//! The servers under test, each started fresh for one measurement and killed after it, so
//! that only one runs at a time and none inherits another's caches or memory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inferpool_e2e::http::{free_port, get};
use inferpool_e2e::parts::ScratchDir;
use serde_json::{Map, Value, json};

use crate::load::{MODEL, Target};

/// llama-server's parallel slots, the agent's batch size: both decode 16 sequences at once.
pub const SLOTS: usize = 16;
/// Tokens per llama.cpp slot in the short-prompt and shared-prefix runs (`-c 16384`).
pub const SLOT_CONTEXT: usize = 1024;

/// The binaries, the model and the threads every server gets.
pub struct Setup {
    pub agent: PathBuf,
    pub llama_server: PathBuf,
    pub model: PathBuf,
    pub threads: usize,
}

/// What to start.
#[derive(Debug, Clone, Copy)]
pub enum Spec {
    /// The agent, with its batching settings.
    Inferpool(Batching),
    /// llama-server, `SLOTS` slots of `slot_context` tokens each (it splits `-c` evenly
    /// among them when `-np` is given), with its per-slot prompt cache asked for.
    Llama { slot_context: usize },
}

/// The agent's `batching` settings a column varies (the rest are the agent's defaults,
/// with `maxBatchSize` at `SLOTS`).
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub kv_cache_dtype: &'static str,
    pub prefix_caching: bool,
    pub strategy: &'static str,
    pub padding: &'static str,
}

impl Batching {
    /// The agent's defaults: continuous batching, no padding, f16 KV, prefix caching on.
    pub const DEFAULT: Self = Self {
        kv_cache_dtype: "f16",
        prefix_caching: true,
        strategy: "continuous",
        padding: "none",
    };

    fn to_json(self) -> Value {
        let mut batching = json!({"maxBatchSize": SLOTS, "prefixCaching": self.prefix_caching,
            "kvCacheDtype": self.kv_cache_dtype, "strategy": self.strategy,
            "padding": self.padding});
        // `adaptive` steers by latency targets; without them it only admits. These are
        // what an interactive pool might ask for: a first token within 2 s, a token
        // every 100 ms.
        if self.strategy == "adaptive" {
            batching["targetTimeToFirstTokenMilliseconds"] = json!(2000);
            batching["targetTimePerTokenMilliseconds"] = json!(100);
        }
        batching
    }
}

/// A running server; dropping it kills it.
pub struct Server {
    pub child: Child,
    pub target: Target,
    _dir: ScratchDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `spec` and waits until it answers.
pub fn start(setup: &Setup, spec: Spec) -> anyhow::Result<Server> {
    match spec {
        Spec::Inferpool(batching) => start_inferpool(setup, batching),
        Spec::Llama { slot_context } => start_llama(setup, slot_context),
    }
}

fn start_inferpool(setup: &Setup, batching: Batching) -> anyhow::Result<Server> {
    let dir = ScratchDir::new("bench-agent")?;
    let (http, grpc) = (free_port()?, free_port()?);
    // The response cache is off: the benchmark compares generation, not replays.
    let config = json!({"servedName": MODEL, "modelPath": setup.model,
        "httpPort": http.port(), "grpcPort": grpc.port(), "batching": batching.to_json(),
        "cache": {"enabled": false}});
    let path = dir.path().join("agent.json");
    std::fs::write(&path, config.to_string())?;
    let child = Command::new(&setup.agent)
        .args(["serve", "--host", "127.0.0.1", "--config"])
        .arg(&path)
        .env("RAYON_NUM_THREADS", setup.threads.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let target = Target {
        http,
        extra: Map::new(),
    };
    let mut server = Server {
        child,
        target,
        _dir: dir,
    };
    until_ready(&mut server, "/readyz", "inferpool")?;
    Ok(server)
}

fn start_llama(setup: &Setup, slot_context: usize) -> anyhow::Result<Server> {
    let dir = ScratchDir::new("bench-llama")?;
    let http = free_port()?;
    let threads = setup.threads.to_string();
    let context = (SLOTS * slot_context).to_string();
    let slots = SLOTS.to_string();
    let child = Command::new(&setup.llama_server)
        .arg("-m")
        .arg(&setup.model)
        .args(["--host", "127.0.0.1", "--port", &http.port().to_string()])
        .args([
            "-t", &threads, "-tb", &threads, "-np", &slots, "-c", &context,
        ])
        .args(["-a", MODEL])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // On by default in recent llama.cpp; asked for explicitly so that the shared-prefix
    // run compares prompt caches whatever the version's default.
    let mut extra = Map::new();
    extra.insert("cache_prompt".into(), Value::Bool(true));
    let mut server = Server {
        child,
        target: Target { http, extra },
        _dir: dir,
    };
    until_ready(&mut server, "/health", "llama.cpp")?;
    Ok(server)
}

fn until_ready(server: &mut Server, path: &str, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        // A server that refused its flags or config is reported now, not in two minutes.
        if let Some(status) = server.child.try_wait()? {
            anyhow::bail!("{name} exited before it was ready: {status}");
        }
        if matches!(get(server.target.http, path), Ok((200, _))) {
            return Ok(());
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
    anyhow::bail!("{name} did not become ready")
}
