//! One agent process of `inferpool-operator local`, kept running: started, restarted with
//! a backoff when it dies, and stopped with SIGTERM and its drain. A leaf below both the
//! fixed layout (`local`) and the scaler (`local_scale`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

/// One agent process to keep running.
#[derive(Debug, Clone)]
pub(crate) struct AgentSlot {
    pub(crate) id: String,
    pub(crate) binary: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) embedding: Option<PathBuf>,
    pub(crate) drain_grace_seconds: u64,
    /// CPUs this agent may use for its engine and its worker threads (see `cpu_share`).
    pub(crate) cpus: usize,
    /// Its API ports' TLS, when the gateway dials agents over TLS.
    pub(crate) tls: Option<LocalTls>,
    /// Its plain `/readyz` (and `/healthz`, `/metrics`), whatever its API ports speak.
    pub(crate) health: std::net::SocketAddr,
}

/// TLS of a local agent's API ports: the gateway's `--upstream-tls-dir`, whose certificate
/// the agent serves (and under mutual TLS the gateway presents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalTls {
    pub(crate) dir: PathBuf,
    /// Whether the agent requires client certificates.
    pub(crate) mutual: bool,
}

/// Keeps one agent running until `stopped`; then SIGTERM and wait for its drain.
pub(crate) async fn supervise(slot: AgentSlot, mut stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut child = match spawn(&slot) {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(agent = %slot.id, error = %e, "cannot start agent");
                return;
            }
        };
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(agent = %slot.id, ?status, "agent exited; restarting");
            }
            () = until_stopped(&mut stopped) => {
                terminate(&mut child).await;
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = until_stopped(&mut stopped) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Returns once `stopped` says so (or its sender is gone).
pub(crate) async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn spawn(slot: &AgentSlot) -> std::io::Result<Child> {
    let mut command = Command::new(&slot.binary);
    command
        .args(["serve", "--host", "127.0.0.1", "--config"])
        .arg(&slot.config)
        .arg("--drain-grace-seconds")
        .arg(slot.drain_grace_seconds.to_string())
        .arg("--grpc-workers")
        .arg(slot.cpus.to_string())
        .arg("--health-port")
        .arg(slot.health.port().to_string())
        // candle's matmuls (rayon) and the agent's async threads, as a pod's CPU limit
        // would bound them: agents sharing a machine each at full width only contend.
        .env("RAYON_NUM_THREADS", slot.cpus.to_string())
        .env("TOKIO_WORKER_THREADS", slot.cpus.to_string())
        .kill_on_drop(true);
    if let Some(embedding) = &slot.embedding {
        command.arg("--embedding-model").arg(embedding);
    }
    if let Some(tls) = &slot.tls {
        command.arg("--tls-dir").arg(&tls.dir);
        if tls.mutual {
            command.arg("--tls-mutual");
        }
    }
    command.spawn()
}

async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
