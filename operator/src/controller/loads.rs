//! The leader's view of every pool's agents' load: the same EndpointSlice discovery as the
//! gateway (never pod IPs from the API) feeds this route table, and each agent found gets
//! a `WatchLoad` subscription, as in the gateway. The autoscaler reads the last report of
//! each agent; an agent whose stream broke counts as reporting nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::autoscale::AgentLoad;
use super::reconcile::lock;
use crate::gateway::core::pick::Reported;
use crate::gateway::core::routes::{RouteSpec, RouteTable};
use crate::gateway::core::view::Endpoint;
use crate::gateway::upstream::channel::{UpstreamSettings, agent_channel};
use crate::gateway::upstream::load::{LoadSink, follow_load};

/// Every discovered pool's agents and their loads, by served model name.
#[derive(Debug, Default)]
pub struct PoolLoads {
    routes: Mutex<HashMap<String, Arc<RouteLoads>>>,
    upstream: UpstreamSettings,
}

/// One pool's agents.
#[derive(Debug)]
struct RouteLoads {
    namespace: String,
    name: String,
    reports: Mutex<HashMap<String, AgentLoad>>,
    links: Mutex<HashMap<String, Link>>,
}

/// One agent's subscription; it ends with the link.
#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    watch: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl PoolLoads {
    /// No pools yet; agents will be dialled with `upstream`.
    pub fn new(upstream: UpstreamSettings) -> Self {
        Self {
            routes: Mutex::default(),
            upstream,
        }
    }

    /// The last reports of the ready agents of pool `namespace/name`, or `None` when
    /// discovery does not serve that pool (not seen yet, or another pool has its model).
    pub fn agents_of(&self, namespace: &str, name: &str) -> Option<Vec<AgentLoad>> {
        let routes = lock(&self.routes);
        let route = routes
            .values()
            .find(|r| r.namespace == namespace && r.name == name)?;
        let reports = lock(&route.reports);
        Some(reports.values().copied().collect())
    }

    /// Agents whose load is followed, over every pool (for tests and metrics).
    pub fn followed(&self) -> usize {
        let routes = lock(&self.routes);
        routes.values().map(|r| lock(&r.links).len()).sum()
    }
}

impl RouteTable for PoolLoads {
    fn set_route(&self, spec: RouteSpec) {
        let route = Arc::new(RouteLoads {
            namespace: spec.namespace,
            name: spec.name,
            reports: Mutex::default(),
            links: Mutex::default(),
        });
        lock(&self.routes).insert(spec.model, route);
    }

    fn set_endpoints(&self, model: &str, endpoints: &[Endpoint]) {
        let route = lock(&self.routes).get(model).cloned();
        if let Some(route) = route {
            route.set_endpoints(endpoints, &self.upstream);
        }
    }

    fn remove_route(&self, model: &str) {
        lock(&self.routes).remove(model);
    }
}

impl RouteLoads {
    fn set_endpoints(self: &Arc<Self>, endpoints: &[Endpoint], upstream: &UpstreamSettings) {
        let keep = |id: &String| endpoints.iter().any(|e| &e.id == id);
        lock(&self.reports).retain(|id, _| keep(id));
        let mut links = lock(&self.links);
        links.retain(|id, link| endpoints.iter().any(|e| &e.id == id && e.grpc == link.addr));
        for e in endpoints {
            if links.contains_key(&e.id) {
                continue;
            }
            match agent_channel(e.grpc, upstream) {
                Ok(channel) => {
                    let watch =
                        tokio::spawn(follow_load(Arc::downgrade(self), e.id.clone(), channel));
                    links.insert(
                        e.id.clone(),
                        Link {
                            addr: e.grpc,
                            watch,
                        },
                    );
                }
                Err(err) => tracing::warn!(agent = %e.id, error = %err, "no channel"),
            }
        }
    }
}

impl LoadSink for RouteLoads {
    fn rejoined(&self, _id: &str) {}

    fn report(&self, id: &str, reported: Reported, _draining: bool, _embedding_model: &str) {
        let load = AgentLoad {
            running: reported.running,
            queued: reported.queued,
            max_batch_size: reported.max_batch_size,
        };
        lock(&self.reports).insert(id.to_owned(), load);
    }

    fn lost(&self, id: &str, _broken: bool) {
        lock(&self.reports).remove(id);
    }
}
