//! The real controller, run in this test process on a runtime of its own, so that every
//! test of a binary shares one controller (as a cluster has one leader).

use std::sync::OnceLock;

use inferpool_operator::controller::deployment::AgentImages;
use inferpool_operator::controller::metrics::ControllerMetrics;
use inferpool_operator::controller::run::{ControllerSettings, run_controller};

use crate::cluster::cluster;

/// Images that no node can pull: kwok never pulls, and nothing else runs them.
pub fn test_images() -> AgentImages {
    AgentImages {
        cpu: "registry.invalid/agent:cpu".into(),
        cuda: "registry.invalid/agent:cuda".into(),
    }
}

/// Settings used by controller tests.
pub fn test_settings() -> ControllerSettings {
    ControllerSettings {
        images: test_images(),
        resources: Default::default(),
        gateway: Some("http://gateway.test:8080/v1".into()),
        network_policy_for: Some("inferpool-system".into()),
        agent_tls: None,
        upstream: Default::default(),
        fence: Default::default(),
    }
}

/// Starts (once per process) the controller against the test cluster; returns its metrics.
pub fn shared_controller() -> anyhow::Result<ControllerMetrics> {
    static METRICS: OnceLock<Result<ControllerMetrics, String>> = OnceLock::new();
    METRICS
        .get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn start() -> anyhow::Result<ControllerMetrics> {
    let c = cluster()?;
    let metrics = ControllerMetrics::default();
    let m = metrics.clone();
    let (started, outcome) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    // A thread of its own: tests may call this from inside their own runtime.
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return drop(started.send(Err(e.to_string()))),
        };
        runtime.block_on(async move {
            let client = match c.client().await {
                Ok(client) => client,
                Err(e) => return drop(started.send(Err(format!("{e:#}")))),
            };
            let _ = started.send(Ok(()));
            run_controller(client, test_settings(), m, std::future::pending()).await;
        });
    });
    outcome.recv()?.map_err(anyhow::Error::msg)?;
    Ok(metrics)
}

/// Installs KEDA's ScaledObject CRD, fetched by `hack/controlplane/build` at the pinned
/// `KEDA_VERSION`, once per process: the KEDA example and the chart's ScaledObjects are
/// validated against it. Server-side: it is too large for client-side apply's annotation.
pub fn install_keda_crd() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let apply = ["apply", "--server-side"];
    install_once(&INSTALLED, &apply, keda_crd_path, "scaledobjects.keda.sh")
}

/// Applies the CRD file `path` gives with `apply` and waits until `crd` is established,
/// once per process for `cell`; every later call returns the first outcome.
fn install_once(
    cell: &OnceLock<Result<(), String>>,
    apply: &[&str],
    path: impl FnOnce() -> anyhow::Result<std::path::PathBuf>,
    crd: &str,
) -> anyhow::Result<()> {
    let install = || -> anyhow::Result<()> {
        let path = path()?;
        let c = cluster()?;
        let file = ["-f", path.to_str().unwrap_or_default()];
        c.kubectl(&[apply, &file[..]].concat())?;
        let established = format!("crd/{crd}");
        c.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &established,
        ])?;
        Ok(())
    };
    cell.get_or_init(|| install().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `<control plane home>/keda-<KEDA_VERSION>-scaledobjects.yaml`.
fn keda_crd_path() -> anyhow::Result<std::path::PathBuf> {
    let versions = crate::parts::repo_root().join("hack/controlplane/versions.env");
    let versions = std::fs::read_to_string(versions)?;
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("KEDA_VERSION="))
        .ok_or_else(|| anyhow::anyhow!("no KEDA_VERSION in versions.env"))?;
    let bin = crate::parts::controlplane_bin()?;
    let home = bin
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no control plane home"))?;
    let file = home.join(format!("keda-{}-scaledobjects.yaml", version.trim()));
    crate::parts::require(&file, "hack/controlplane/build")
}

/// Installs the committed CRD once per process (`kubectl apply`, as a user would).
pub fn install_crd() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let path = || Ok(crate::parts::repo_root().join("crds/inferencepools.inferpool.dev.yaml"));
    install_once(&INSTALLED, &["apply"], path, "inferencepools.inferpool.dev")
}
