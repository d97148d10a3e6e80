//! `inferpool-operator gateway`: the data plane alone, its own Deployment. No lease and no
//! controller: every replica serves every pool, its routes following the cluster through
//! Kubernetes discovery, and is ready once it has listed them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use inferpool_protocol::listen::WorkerSockets;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::gateway::auth::AuthFlags;
use crate::gateway::discovery::{Discovery as _, KubernetesDiscovery};
use crate::gateway::dispatch::gateway::Gateway;
use crate::gateway::http::limits::HttpSettings;
use crate::gateway::runtime;
use crate::gateway::upstream::channel::UpstreamSettings;
use crate::gateway_demand::{identity, publish_demand};
use crate::run::wait_for_signal;
use crate::server::serve_health;

/// Everything `gateway` needs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address of the gateway (the pools' OpenAI endpoint and its `/metrics`).
    pub addr: SocketAddr,
    /// Address of `/healthz` and `/readyz`.
    pub health_addr: SocketAddr,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
    /// Listening sockets (one accept loop each).
    pub workers: usize,
    /// HTTP limits and TLS.
    pub http: HttpSettings,
    /// Timeouts of the links to the agents.
    pub upstream: UpstreamSettings,
    /// API keys.
    pub auth: AuthFlags,
}

/// Serves until SIGTERM or Ctrl-C, then finishes what is in flight within the shutdown
/// grace and closes the links to the agents.
pub async fn serve(client: kube::Client, config: GatewayConfig) -> anyhow::Result<()> {
    let synced = Arc::new(AtomicBool::new(false));
    // The gateway's metrics are on its own port; the health port only answers probes.
    serve_health(config.health_addr, Registry::default(), synced.clone()).await?;
    let bound = WorkerSockets::bind(config.addr, config.workers)
        .with_context(|| format!("binding {}", config.addr))?;
    let gateway = Gateway::with_upstream(config.upstream);
    if let Some(auth) = config.auth.load()? {
        gateway.set_auth(auth);
    }
    let demand = publish_demand(client.clone(), gateway.clone(), identity());
    let publishing = tokio::spawn(demand);
    let discovery = KubernetesDiscovery {
        client,
        queue_wait: config.queue_wait,
        synced,
    };
    tokio::spawn(discovery.run(gateway.clone()));
    let (stop, stopped) = watch::channel(false);
    tracing::info!(addr = %bound.addr(), workers = config.workers, "gateway listening");
    let workers = runtime::start_with(bound, &gateway, &stopped, config.http)?;
    wait_for_signal().await;
    let _ = stop.send(true);
    workers.join().await?;
    publishing.abort();
    Ok(())
}
