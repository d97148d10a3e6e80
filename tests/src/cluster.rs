//! A real Kubernetes control plane for tests.
//!
//! `INFERPOOL_TEST_KUBECONFIG` names an existing cluster to use (`hack/test` starts one for
//! the whole run; a kind cluster works too). Otherwise the first test to ask starts one with
//! `hack/controlplane/up --owner <this process>`, whose watchdog stops it when this test
//! process exits, however it exits. Each test gets its own namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::parts::{controlplane_bin, repo_root};

/// A running control plane and the tools to talk to it.
#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    bin: PathBuf,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The control plane for this test process, started on first use.
pub fn cluster() -> anyhow::Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| Cluster::connect_or_start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("no test control plane: {e}"))
}

impl Cluster {
    fn connect_or_start() -> anyhow::Result<Self> {
        let bin = controlplane_bin()?;
        if let Some(kubeconfig) = std::env::var_os("INFERPOOL_TEST_KUBECONFIG") {
            return Ok(Self {
                kubeconfig: kubeconfig.into(),
                bin,
            });
        }
        let dir = start_control_plane(2)?;
        Ok(Self {
            kubeconfig: dir.join("kubeconfig"),
            bin,
        })
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client for the admin user. Make one per test: a client is tied to the tokio
    /// runtime that created it.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A command for one of the control-plane tools (`kubectl`, `helm`), pointed at this
    /// cluster.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd.env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("inferpool-helm-cache"),
        );
        cmd
    }

    /// Runs `helm args...`, returning stdout, or an error holding stderr.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.tool("helm").args(args).output()?;
        check(out, &format!("helm {}", args.join(" ")))
    }

    /// Runs `kubectl args...`, returning stdout, or an error holding stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.tool("kubectl").args(args).output()?;
        check(out, &format!("kubectl {}", args.join(" ")))
    }

    /// Runs `kubectl args...` with `stdin` as input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = self
            .tool("kubectl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(stdin.as_bytes())?;
        check(
            child.wait_with_output()?,
            &format!("kubectl {}", args.join(" ")),
        )
    }

    /// A kubeconfig file (in the temp folder, named `file`) that acts as `user` through
    /// impersonation, with the admin's credentials.
    pub fn impersonating(&self, user: &str, file: &str) -> anyhow::Result<PathBuf> {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        for auth in &mut kubeconfig.auth_infos {
            if let Some(info) = auth.auth_info.as_mut() {
                info.impersonate = Some(user.to_owned());
            }
        }
        let path = std::env::temp_dir().join(file);
        std::fs::write(&path, serde_saphyr::to_string(&kubeconfig)?)?;
        Ok(path)
    }

    /// A fresh namespace for one test, deleted when the returned guard drops.
    pub fn namespace(&'static self, test: &str) -> anyhow::Result<TestNamespace> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t-{}-{}-{}",
            test,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        self.kubectl(&["create", "namespace", &name])?;
        Ok(TestNamespace {
            name,
            cluster: self,
        })
    }
}

/// A namespace owned by one test.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    cluster: &'static Cluster,
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort: the whole control plane goes away with the run anyway.
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Starts a control plane with `nodes` fake nodes, stopped when this process exits at the
/// latest; returns its directory.
fn start_control_plane(nodes: u32) -> anyhow::Result<PathBuf> {
    let out = Command::new(repo_root().join("hack/controlplane/up"))
        .args(["--nodes", &nodes.to_string()])
        .args(["--owner", &std::process::id().to_string()])
        .output()
        .context("running hack/controlplane/up")?;
    let out = check(out, "hack/controlplane/up")?;
    Ok(PathBuf::from(out.trim()))
}

/// A control plane of one test's own, for faults that would disturb every other test
/// (crashing its API server or etcd); stopped when dropped.
#[derive(Debug)]
pub struct OwnCluster {
    /// Its tools and clients.
    pub cluster: Cluster,
    dir: PathBuf,
}

impl OwnCluster {
    /// Starts one with `nodes` fake nodes.
    pub fn start(nodes: u32) -> anyhow::Result<Self> {
        let dir = start_control_plane(nodes)?;
        let cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            bin: controlplane_bin()?,
        };
        Ok(Self { cluster, dir })
    }

    /// SIGKILLs its process `name` (`kube-apiserver`, `etcd`) and starts it again;
    /// returns once the API server is ready again.
    pub fn restart(&self, name: &str) -> anyhow::Result<()> {
        let out = Command::new(repo_root().join("hack/controlplane/restart"))
            .arg(&self.dir)
            .arg(name)
            .output()
            .context("running hack/controlplane/restart")?;
        check(out, &format!("hack/controlplane/restart {name}")).map(drop)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        // Best effort: the watchdog stops it when the test process exits anyway.
        let _ = Command::new(repo_root().join("hack/controlplane/down"))
            .arg(&self.dir)
            .output();
    }
}

fn check(out: Output, what: &str) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::bail!("`{what}` failed ({}): {stderr}{stdout}", out.status)
}
