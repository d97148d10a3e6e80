//! The gateway's route table at run time: pools by served model name, each with its
//! agents, retry budget and metrics. Discovery fills it through `core::routes::RouteTable`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::held::Holding;
use super::pool::Pool;
use crate::gateway::auth::Auth;
use crate::gateway::core::pick::{picker, strategy_name};
use crate::gateway::core::policy::{ForwardError, ForwardSettings};
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::routes::{RouteSpec, RouteTable};
use crate::gateway::core::view::{Endpoint, PoolView};
use crate::gateway::metrics::{GatewayMetrics, PoolMetrics};
use crate::gateway::upstream::channel::UpstreamSettings;

/// One pool behind the gateway.
#[derive(Debug)]
pub struct PoolRoute {
    /// The InferencePool's namespace.
    pub namespace: String,
    /// The InferencePool's name (its metrics' `pool` label).
    pub name: String,
    /// Its agents.
    pub pool: Arc<Pool>,
    /// Its retry budget.
    pub budget: RetryBudget,
    /// Retries and queueing.
    pub forward: ForwardSettings,
    /// Longest a request may take.
    pub timeout: Duration,
    /// The session header for session affinity.
    pub session_header: String,
    /// Its metrics.
    pub metrics: PoolMetrics,
}

impl PoolRoute {
    /// Why a request ran out of time before an agent took it: the pool was still without
    /// agents (scaling), or they were all busy or failing.
    pub fn timed_out(&self) -> ForwardError {
        if self.pool.has_agents() {
            ForwardError::Timeout
        } else {
            ForwardError::Scaling
        }
    }
}

/// The gateway: pools by served model name.
#[derive(Debug, Default)]
pub struct Gateway {
    routes: RwLock<HashMap<String, Arc<PoolRoute>>>,
    /// When the gateway started (seconds since the epoch: model list and answer ids).
    pub created: u64,
    /// The gateway's metrics.
    pub metrics: Arc<GatewayMetrics>,
    upstream: UpstreamSettings,
    /// Told whenever a pool's held requests change (see `held`).
    demand: Arc<Notify>,
    /// API keys and quotas, when the gateway has them.
    auth: OnceLock<Arc<Auth>>,
}

/// Requests one pool's route holds for want of an agent (none ready, or none free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRequests {
    /// The InferencePool's namespace.
    pub namespace: String,
    /// The InferencePool's name.
    pub name: String,
    /// Requests held now.
    pub held: u32,
}

impl Gateway {
    /// A gateway with no pools, its agent links as `UpstreamSettings::default()`.
    pub fn new() -> Arc<Self> {
        Self::with_upstream(UpstreamSettings::default())
    }

    /// A gateway with no pools whose agent links have `upstream`'s timeouts.
    pub fn with_upstream(upstream: UpstreamSettings) -> Arc<Self> {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Arc::new(Self {
            routes: RwLock::default(),
            created,
            metrics: Arc::default(),
            upstream,
            demand: Arc::default(),
            auth: OnceLock::new(),
        })
    }

    /// Requires `auth`'s keys of every request from now on (once; later calls are ignored).
    pub fn set_auth(&self, auth: Arc<Auth>) {
        let _ = self.auth.set(auth);
    }

    /// The API keys, when requests need one.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.get().map(Arc::as_ref)
    }

    /// Told (one stored permit) whenever a pool's held requests change.
    pub fn demand(&self) -> Arc<Notify> {
        self.demand.clone()
    }

    /// Every route's held requests now.
    pub fn held(&self) -> Vec<HeldRequests> {
        self.routes()
            .iter()
            .map(|r| HeldRequests {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                held: r.pool.waiting(),
            })
            .collect()
    }

    /// The route of `model`.
    pub fn route(&self, model: &str) -> Option<Arc<PoolRoute>> {
        self.routes.read().ok()?.get(model).cloned()
    }

    /// Every route.
    pub fn routes(&self) -> Vec<Arc<PoolRoute>> {
        self.routes
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The pool (first by name) whose agents serve the embedding model `model`.
    pub fn embedding_route(&self, model: &str) -> Option<Arc<PoolRoute>> {
        let routes = self.routes.read().ok()?;
        let mut serving: Vec<(&String, &Arc<PoolRoute>)> = routes
            .iter()
            .filter(|(_, r)| r.pool.embedding_model().as_deref() == Some(model))
            .collect();
        serving.sort_by_key(|(name, _)| *name);
        serving.first().map(|(_, r)| Arc::clone(r))
    }

    /// Every model served: completion models and embedding models, sorted.
    pub fn model_names(&self) -> Vec<String> {
        let routes = self.routes.read().map(|r| {
            r.iter()
                .flat_map(|(name, route)| [Some(name.clone()), route.pool.embedding_model()])
                .flatten()
                .collect::<Vec<_>>()
        });
        let mut names = routes.unwrap_or_default();
        names.sort();
        names.dedup();
        names
    }

    /// Stops serving every pool and closes their agent links (the gateway stops).
    pub fn close(&self) {
        let routes = self.routes.write().map(|mut r| std::mem::take(&mut *r));
        for route in routes.into_iter().flat_map(HashMap::into_values) {
            route.pool.close();
        }
    }

    fn route_of(&self, spec: RouteSpec) -> PoolRoute {
        let strategy = strategy_name(spec.strategy);
        let view = PoolView::new(picker(spec.strategy), spec.view);
        let holding = Holding::new(spec.max_held, self.demand.clone());
        PoolRoute {
            metrics: self.metrics.pool(&spec.name, strategy),
            pool: Pool::holding(spec.model, view, self.upstream.clone(), holding),
            namespace: spec.namespace,
            name: spec.name,
            budget: RetryBudget::new(spec.budget_percent),
            forward: spec.forward,
            timeout: spec.timeout,
            session_header: spec.session_header,
        }
    }
}

impl RouteTable for Gateway {
    fn set_route(&self, spec: RouteSpec) {
        let route = Arc::new(self.route_of(spec));
        if let Ok(mut routes) = self.routes.write()
            && let Some(old) = routes.insert(route.pool.model.clone(), route)
        {
            old.pool.close();
        }
    }

    fn set_endpoints(&self, model: &str, endpoints: &[Endpoint]) {
        if let Some(route) = self.route(model) {
            route.pool.set_endpoints(endpoints);
        }
    }

    fn remove_route(&self, model: &str) {
        let removed = self.routes.write().ok().and_then(|mut r| r.remove(model));
        if let Some(route) = removed {
            route.pool.close();
        }
    }
}
