//! Real `inferpool-operator run` (controller) and `inferpool-operator gateway` processes
//! for tests, killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::http::{free_port, free_ports, get, metric};
use crate::parts::operator_binary;

/// A running operator process.
#[derive(Debug)]
pub struct OperatorProcess {
    /// The process.
    pub child: Child,
    /// Its /healthz, /readyz and /metrics address.
    pub health: SocketAddr,
    /// Its identity in the leader Lease.
    pub identity: String,
    /// Its log file (JSON lines on stderr).
    pub log: PathBuf,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OperatorProcess {
    /// Starts the controller (`run` serves no gateway), competing for a 5 s lease in
    /// `lease_ns`.
    pub fn spawn(kubeconfig: &Path, identity: &str, lease_ns: &str) -> anyhow::Result<Self> {
        let health = free_port()?;
        let log =
            std::env::temp_dir().join(format!("inferpool-{identity}-{}.log", std::process::id()));
        let child = Command::new(operator_binary()?)
            .args([
                "run",
                "--health-addr",
                &health.to_string(),
                "--lease-namespace",
                lease_ns,
            ])
            .args(["--lease-duration-seconds", "5", "--identity", identity])
            .arg("--agent-network-policy=true")
            .args(["--agent-image", "registry.invalid/agent:cpu"])
            .args(["--agent-cuda-image", "registry.invalid/agent:cuda"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self {
            child,
            health,
            identity: identity.to_owned(),
            log,
        })
    }

    /// An unlabelled metric from its /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (code, body) = get(self.health, "/metrics").ok()?;
        (code == 200).then(|| metric(&body, name)).flatten()
    }

    /// Whether it holds the leader lease.
    pub fn leads(&self) -> bool {
        self.metric("inferpool_controller_leader") == Some(1.0)
    }

    /// Whether the API server refused it something as `user`. RBAC refusals name the user
    /// (`... is forbidden: User "system:serviceaccount:..." cannot`, quotes escaped in the
    /// JSON log); other refusals, such as writing into a namespace an earlier test is
    /// deleting, are not about permissions.
    pub fn refused_as(&self, user: &str) -> bool {
        self.log_text()
            .contains(&format!("User \\\"{user}\\\" cannot"))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A running `inferpool-operator gateway` process on loopback.
#[derive(Debug)]
pub struct GatewayProcess {
    /// The process.
    pub child: Child,
    /// Its gateway address (OpenAI API, /metrics).
    pub addr: SocketAddr,
    /// Its /healthz and /readyz address.
    pub health: SocketAddr,
    /// Its log file (JSON lines on stderr).
    pub log: PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GatewayProcess {
    /// Starts a gateway of the pools of the cluster of `kubeconfig`.
    pub fn spawn(kubeconfig: &Path, name: &str) -> anyhow::Result<Self> {
        let [addr, health] = free_ports::<2>()?;
        let log = std::env::temp_dir().join(format!("inferpool-{name}-{}.log", std::process::id()));
        let child = Command::new(operator_binary()?)
            .args(["gateway", "--gateway-addr", &addr.to_string()])
            .args([
                "--health-addr",
                &health.to_string(),
                "--gateway-workers",
                "1",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Self {
            child,
            addr,
            health,
            log,
        })
    }

    /// Whether /readyz says it has listed the pools and their agents.
    pub fn ready(&self) -> bool {
        get(self.health, "/readyz").is_ok_and(|(code, _)| code == 200)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
