//! Discovery: where the gateway learns its pools and their agents, behind one trait with
//! two sources. Kubernetes: InferencePools and the EndpointSlices of agent Services (and
//! only those: a label selector), each event applied to the route table by an incremental
//! index. Static: pools with fixed agent addresses (local mode). Discovery depends on the
//! gateway's core alone.

pub mod index;
pub mod objects;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};

use self::index::{Change, Index};
use self::objects::route_for;
use crate::api::InferencePool;
use crate::controller::names::AGENT_SELECTOR;
use crate::gateway::core::routes::RouteTable;
use crate::gateway::core::view::Endpoint;

/// A source of pools and their agents for the gateway.
pub trait Discovery {
    /// Puts the source's pools into `table` and keeps them in step for as long as the
    /// source changes (a static source returns once they are in).
    fn run<T: RouteTable>(self, table: Arc<T>) -> impl Future<Output = ()> + Send;
}

/// InferencePools and agent EndpointSlices of a cluster.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // kube's Client is not Debug
pub struct KubernetesDiscovery {
    /// The cluster.
    pub client: Client,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
    /// Set once both kinds were listed, so that a new gateway replica is not made ready
    /// (and sent traffic) before it knows the pools.
    pub synced: Arc<AtomicBool>,
}

impl Discovery for KubernetesDiscovery {
    fn run<T: RouteTable>(self, table: Arc<T>) -> impl Future<Output = ()> + Send {
        discover(self, table)
    }
}

/// Pools with a fixed list of agents each.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    /// Each pool and its agents.
    pub pools: Vec<(InferencePool, Vec<Endpoint>)>,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
}

impl Discovery for StaticDiscovery {
    async fn run<T: RouteTable>(self, table: Arc<T>) {
        for (pool, endpoints) in &self.pools {
            let spec = route_for(pool, self.queue_wait);
            let model = spec.model.clone();
            table.set_route(spec);
            table.set_endpoints(&model, endpoints);
        }
    }
}

/// Keeps `table`'s routes in step with the cluster, event by event. A failing watch is
/// retried with kube's default backoff (exponential, capped), not in a tight loop against
/// an API server that may be struggling.
async fn discover<T: RouteTable>(source: KubernetesDiscovery, table: Arc<T>) {
    let pools = watcher(
        Api::<InferencePool>::all(source.client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|event| Change::Pool(Box::new(event)));
    let agents = watcher::Config::default().labels(AGENT_SELECTOR);
    let slices = watcher(Api::<EndpointSlice>::all(source.client), agents)
        .default_backoff()
        .map_ok(|event| Change::Slice(Box::new(event)));
    let mut events = std::pin::pin!(futures::stream::select(pools, slices));
    let mut index = Index::new(source.queue_wait);
    while let Some(event) = events.next().await {
        match event {
            Ok(change) => index.handle(&*table, change),
            Err(e) => {
                tracing::warn!(error = %e, "discovery watch failed; retrying after a backoff")
            }
        }
        if index.synced() {
            source.synced.store(true, Ordering::Relaxed);
        }
    }
}
