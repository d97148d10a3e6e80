//! `inferpool-operator run`: health and metrics endpoints, leader election, and the
//! controller while this replica leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::controller::metrics::ControllerMetrics;
use crate::controller::run::{ControllerSettings, run_controller};
use crate::gateway::discovery::{Discovery as _, KubernetesDiscovery};
use crate::leader::{LeaseSettings, elect, until_leading, until_not_leading};
use crate::server::{HealthState, router};

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Run the controller (when leading).
    pub controller: bool,
    /// Controller settings.
    pub settings: ControllerSettings,
    /// Leader lease.
    pub lease: LeaseSettings,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: SocketAddr,
    /// Address of the gateway (every replica serves it), if any.
    pub gateway_addr: Option<SocketAddr>,
    /// Longest a request waits at the gateway for a free agent.
    pub gateway_queue_wait: std::time::Duration,
    /// Gateway listening sockets (one accept loop each).
    pub gateway_workers: usize,
    /// The gateway's HTTP limits and TLS.
    pub gateway_http: crate::gateway::http::limits::HttpSettings,
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(client: kube::Client, config: RunConfig) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = ControllerMetrics::register(&mut registry);
    let health = Arc::new(HealthState {
        registry,
        ready: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(config.health_addr)
        .await
        .with_context(|| format!("binding {}", config.health_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "health and metrics endpoints listening");
    tokio::spawn(axum::serve(listener, router(health.clone())).into_future());

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop.send(true);
    });
    let stopping = stopped.clone();
    let gateway = match config.gateway_addr {
        Some(addr) => {
            let bound =
                inferpool_protocol::listen::WorkerSockets::bind(addr, config.gateway_workers)
                    .with_context(|| format!("binding {addr}"))?;
            Some(serve_gateway(client.clone(), bound, &config, &stopped)?)
        }
        None => None,
    };
    if config.controller {
        let mut leading = elect(client.clone(), &config.lease)
            .await
            .context("leader election")?;
        health.ready.store(true, Ordering::Relaxed);
        lead_while_elected(client, &config, &metrics, &mut leading, stopped).await;
        // Dropping the receiver releases the lease, so that a standby takes over at once.
        drop(leading);
    } else {
        health.ready.store(true, Ordering::Relaxed);
        let _ = stopped.clone().wait_for(|s| *s).await;
    }
    // On a signal the workers finish what they hold; otherwise (the lease was lost for
    // good) the process ends and is restarted.
    if let Some(workers) = gateway
        && *stopping.borrow()
    {
        workers.join().await?;
    }
    Ok(())
}

/// Serves the gateway, its routes following the cluster, until `stopped` (it then
/// finishes its requests within its shutdown grace).
fn serve_gateway(
    client: kube::Client,
    bound: inferpool_protocol::listen::WorkerSockets,
    config: &RunConfig,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<crate::gateway::runtime::Workers> {
    let gateway = crate::gateway::dispatch::gateway::Gateway::new();
    let queue_wait = config.gateway_queue_wait;
    let discovery = KubernetesDiscovery { client, queue_wait };
    tokio::spawn(discovery.run(gateway.clone()));
    tracing::info!(addr = %bound.addr(), "gateway listening");
    let http = config.gateway_http.clone();
    Ok(crate::gateway::runtime::start_with(
        bound, &gateway, stopped, http,
    )?)
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
