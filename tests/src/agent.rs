//! A real `inferpool-agent serve` process on loopback with the default model (and the
//! embedding model), for tests of the data path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::http::{free_ports, get};
use crate::netns::NetNs;
use crate::parts::{ScratchDir, agent_binary, default_model, embedding_model};
use crate::wait::wait_until;

/// The name the test agent serves its model under.
pub const MODEL: &str = "smollm2";
/// The name of its embedding model.
pub const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// A running agent; killed when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    /// HTTP address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    dir: ScratchDir,
}

impl AgentProcess {
    /// Starts an agent whose `agent.json` is the default one with `overrides` merged in,
    /// and waits until it is ready.
    pub async fn start(overrides: serde_json::Value) -> anyhow::Result<Self> {
        Self::start_on(overrides, None).await
    }

    /// The same, inside the network namespace `ns` (listening on its inner address).
    pub async fn start_in(ns: &NetNs, overrides: serde_json::Value) -> anyhow::Result<Self> {
        Self::start_on(overrides, Some(ns)).await
    }

    async fn start_on(overrides: serde_json::Value, ns: Option<&NetNs>) -> anyhow::Result<Self> {
        let dir = ScratchDir::new("agent")?;
        let host: IpAddr = ns.map_or(Ipv4Addr::LOCALHOST, |n| n.inner).into();
        // Ports free on loopback are free inside a fresh namespace too.
        let [http, grpc] = free_ports::<2>()?.map(|a| a.port());
        let mut config = serde_json::json!({
            "servedName": MODEL,
            "modelPath": default_model()?,
            "httpPort": http,
            "grpcPort": grpc,
        });
        if let (Some(c), Some(o)) = (config.as_object_mut(), overrides.as_object()) {
            c.extend(o.clone());
        }
        let config_path = dir.path().join("agent.json");
        std::fs::write(&config_path, config.to_string())?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(agent_binary()?);
                c
            }
            None => Command::new(agent_binary()?),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--host", &host.to_string(), "--drain-grace-seconds", "60"])
            .arg("--embedding-model")
            .arg(embedding_model()?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut agent = Self {
            child,
            http: SocketAddr::new(host, http),
            grpc: SocketAddr::new(host, grpc),
            dir,
        };
        agent.until_ready().await?;
        Ok(agent)
    }

    async fn until_ready(&mut self) -> anyhow::Result<()> {
        let http = self.http;
        let ready = wait_until(Duration::from_secs(180), || async move {
            matches!(get(http, "/readyz"), Ok((200, _))).then_some(())
        })
        .await;
        if ready.is_err() || self.child.try_wait()?.is_some() {
            anyhow::bail!("the agent did not become ready:\n{}", self.log_text());
        }
        Ok(())
    }

    /// What the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(())
    }

    /// Waits for the process to exit.
    pub async fn exited(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = &mut self.child;
        wait_until(limit, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }

    /// Injects `fault` through `POST /admin/faults` (agents built with fault injection,
    /// as the tests' are).
    pub fn inject(&self, fault: &serde_json::Value) -> anyhow::Result<()> {
        let reply = crate::http::post_json(self.http, "/admin/faults", fault)?;
        anyhow::ensure!(reply.status == 204, "injecting {fault}: {}", reply.status);
        Ok(())
    }

    /// The agent's `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = get(self.http, "/metrics")?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(body)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
