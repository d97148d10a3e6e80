//! `inferpool-operator run`: the controller alone (the gateway is its own Deployment,
//! `inferpool-operator gateway`): health and metrics endpoints, leader election, and the
//! controller while this replica leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::controller::metrics::ControllerMetrics;
use crate::controller::run::{ControllerSettings, run_controller};
use crate::leader::{
    Election, LeaseSettings, RELEASE, elect, fenced_client, until_leading, until_not_leading,
};
use crate::server::serve_health;

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Controller settings.
    pub settings: ControllerSettings,
    /// Leader lease.
    pub lease: LeaseSettings,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: SocketAddr,
}

/// Runs until SIGTERM or Ctrl-C, or until the lease is lost for good (the process then
/// ends and is restarted).
pub async fn run(client: kube::Client, config: RunConfig) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    serve_health(config.health_addr, registry, ready.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    let election = elect(client.clone(), &config.lease)
        .await
        .context("leader election")?;
    let Election {
        mut leading,
        fence,
        released,
    } = election;
    // The controller's writes are refused while the fence is closed (see `leader`).
    let fenced = fenced_client(kube::Config::infer().await?, fence.clone())?;
    ready.store(true, Ordering::Relaxed);
    let config = RunConfig {
        settings: ControllerSettings {
            fence,
            ..config.settings
        },
        ..config
    };
    lead_while_elected(fenced, &config, &metrics, &mut leading, stopped).await;
    // Dropping the receiver releases the lease, so that a standby takes over at once;
    // waited for, or the runtime's end would cancel the release.
    drop(leading);
    if tokio::time::timeout(RELEASE, released).await.is_err() {
        tracing::warn!("the lease was not released in time; the standby waits for it to expire");
    }
    Ok(())
}

async fn lead_while_elected(
    client: kube::Client,
    config: &RunConfig,
    metrics: &ControllerMetrics,
    leading: &mut watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            elected = until_leading(leading) => if !elected { return },
        }
        tracing::info!(identity = %config.lease.identity, "leading: controller starting");
        metrics.leader.set(1);
        let lost = until_not_leading(leading.clone());
        let mut stop = stopped.clone();
        let until = async move {
            tokio::select! {
                _ = lost => {},
                _ = stop.wait_for(|s| *s) => {},
            }
        };
        run_controller(
            client.clone(),
            config.settings.clone(),
            metrics.clone(),
            until,
        )
        .await;
        metrics.leader.set(0);
        tracing::info!("controller stopped");
        if *stopped.borrow() {
            return;
        }
    }
}

/// Returns on SIGTERM or Ctrl-C.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} },
            Err(_) => drop(ctrl_c.await),
        }
    }
    #[cfg(not(unix))]
    drop(ctrl_c.await);
}
