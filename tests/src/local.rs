//! `inferpool-operator local` as a process: a pool of real agents on loopback behind the
//! real gateway, for tests of the data path through the gateway.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::agent::{AgentProcess, MODEL};
use crate::http::{free_port, get, post_json};
use crate::parts::{ScratchDir, models_dir, operator_binary};
use crate::wait::wait_until;

/// A running local pool; stopped when dropped.
#[derive(Debug)]
pub struct LocalPool {
    child: Child,
    /// The gateway's address.
    pub addr: SocketAddr,
    dir: ScratchDir,
}

impl LocalPool {
    /// A gateway alone (static discovery, `--agent`) for pool `name`, routed by `strategy`,
    /// over agents already running; they are known as `name-0`, `name-1`, ... in order.
    pub async fn over_agents(
        name: &str,
        strategy: &str,
        agents: &[&AgentProcess],
        queue_wait_seconds: u64,
    ) -> anyhow::Result<Self> {
        let manifest = format!(
            "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {name}\n\
             spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: {}\n  \
             routing:\n    strategy: {strategy}\n",
            agents.len()
        );
        let wait = queue_wait_seconds.to_string();
        let addrs: Vec<String> = agents
            .iter()
            .map(|a| format!("{},{}", a.grpc, a.http))
            .collect();
        let mut args = vec!["--queue-wait-seconds", wait.as_str()];
        for addr in &addrs {
            args.extend(["--agent", addr.as_str()]);
        }
        Self::start_with(&manifest, MODEL, &args).await
    }

    /// Requests the gateway picked each agent `pool-i` for so far, whatever the strategy
    /// label says (one strategy per gateway).
    pub fn picks<const N: usize>(&self, pool: &str) -> anyhow::Result<[f64; N]> {
        let (_, text) = self.get("/metrics")?;
        let count = |i: usize| {
            let key =
                format!("inferpool_gateway_picks_total{{pool=\"{pool}\",agent=\"{pool}-{i}\",");
            let values = text.lines().filter_map(|l| {
                let (_, value) = l.strip_prefix(&key)?.split_once("} ")?;
                value.parse::<f64>().ok()
            });
            values.sum::<f64>()
        };
        Ok(std::array::from_fn(count))
    }

    /// Starts `manifest` and waits until a chat request for `model` is answered.
    pub async fn start(manifest: &str, model: &str) -> anyhow::Result<Self> {
        Self::start_with(manifest, model, &[]).await
    }

    /// The same, with more arguments for `inferpool-operator local`.
    pub async fn start_with(manifest: &str, model: &str, args: &[&str]) -> anyhow::Result<Self> {
        let body = serde_json::json!({"model": model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}]});
        Self::start_probed(manifest, args, move |addr| {
            post_json(addr, "/v1/chat/completions", &body).is_ok_and(|r| r.status == 200)
        })
        .await
    }

    /// The same, ready once `answers` (called with the gateway's address) holds: for a
    /// gateway that a plain HTTP/1.1 request cannot reach (TLS).
    pub async fn start_probed(
        manifest: &str,
        args: &[&str],
        answers: impl Fn(SocketAddr) -> bool,
    ) -> anyhow::Result<Self> {
        let dir = ScratchDir::new("local")?;
        let file = dir.path().join("pool.yaml");
        std::fs::write(&file, manifest)?;
        let addr = free_port()?;
        let log = std::fs::File::create(dir.path().join("local.log"))?;
        let child = Command::new(operator_binary()?)
            .args(["local", "--addr", &addr.to_string(), "-f"])
            .arg(&file)
            .args(args)
            .env("INFERPOOL_MODELS", models_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pool = Self { child, addr, dir };
        let ready = wait_until(Duration::from_secs(180), || {
            let answered = answers(addr);
            async move { answered.then_some(()) }
        })
        .await;
        if ready.is_err() {
            anyhow::bail!("the local pool never answered:\n{}", pool.log_text());
        }
        Ok(pool)
    }

    /// What the process logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }

    /// The agent processes (children of the local process).
    pub fn agent_pids(&self) -> Vec<u32> {
        children(self.child.id())
    }

    /// The pid of agent `id` (the child started with the config file `<id>.json`).
    pub fn agent_pid(&self, id: &str) -> Option<u32> {
        agent_pid_of(self.child.id(), id)
    }

    /// The HTTP address of agent `id` (its API and `/metrics`), from the config file it
    /// was started with.
    pub fn agent_http(&self, id: &str) -> anyhow::Result<SocketAddr> {
        self.agent_port(id, "httpPort")
    }

    /// The gRPC address of agent `id`.
    pub fn agent_grpc(&self, id: &str) -> anyhow::Result<SocketAddr> {
        self.agent_port(id, "grpcPort")
    }

    /// The port named `key` in the config file agent `id` was started with, on loopback.
    fn agent_port(&self, id: &str, key: &str) -> anyhow::Result<SocketAddr> {
        let pid = self
            .agent_pid(id)
            .ok_or_else(|| anyhow::anyhow!("no agent {id}"))?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let config = cmdline
            .split(|&b| b == 0)
            .find(|arg| arg.ends_with(format!("/{id}.json").as_bytes()))
            .ok_or_else(|| anyhow::anyhow!("agent {id} has no config argument"))?;
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(String::from_utf8_lossy(config).as_ref())?)?;
        let port = config[key]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow::anyhow!("agent {id}'s config has no {key}"))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Agent `id`'s `/metrics` text.
    pub fn agent_metrics(&self, id: &str) -> anyhow::Result<String> {
        let (status, text) = get(self.agent_http(id)?, "/metrics")?;
        anyhow::ensure!(status == 200, "agent {id}'s /metrics answered {status}");
        Ok(text)
    }

    /// Waits until agent `id` runs as a process other than `old` (local mode restarts an
    /// agent that died) and the gateway counts it healthy again; its new pid.
    pub async fn restarted(&self, id: &str, old: u32, limit: Duration) -> anyhow::Result<u32> {
        let pool = id.rsplit_once('-').map_or(id, |(pool, _)| pool);
        let key = format!("inferpool_gateway_agent_healthy{{pool=\"{pool}\",agent=\"{id}\"}}");
        wait_until(limit, || {
            let pid = self.agent_pid(id).filter(|&p| p != old);
            let healthy = self
                .get("/metrics")
                .is_ok_and(|(_, text)| crate::http::metric(&text, &key) == Some(1.0));
            async move { pid.filter(|_| healthy) }
        })
        .await
    }

    /// Sends `signal` (e.g. `-KILL`) to `pid`.
    pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }

    /// Stops the pool with SIGTERM and returns its exit code.
    pub async fn stop(mut self) -> anyhow::Result<Option<i32>> {
        Self::signal(self.child.id(), "-TERM")?;
        let child = &mut self.child;
        let status = wait_until(Duration::from_secs(90), || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await?;
        Ok(status.code())
    }

    /// `GET` on the gateway.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        get(self.addr, path)
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        for pid in self.agent_pids() {
            let _ = Self::signal(pid, "-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child processes of `pid`, sorted.
pub fn children(pid: u32) -> Vec<u32> {
    // Children are listed under the thread that spawned them: read every thread's.
    let tasks = format!("/proc/{pid}/task");
    let mut pids: Vec<u32> = std::fs::read_dir(tasks)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The pid of agent `id` of the local process `local` (its child started with the config
/// file `<id>.json`).
pub fn agent_pid_of(local: u32, id: &str) -> Option<u32> {
    let config = format!("/{id}.json");
    children(local).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.split(|&b| b == 0)
                .any(|arg| arg.ends_with(config.as_bytes()))
        })
    })
}
