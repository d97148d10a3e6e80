//! The route table's contract with discovery: a route is plain settings (`RouteSpec`),
//! and discovery hands routes and their agents to a `RouteTable`, whatever serves them.
//! Discovery therefore depends on the core alone; the dispatch layer implements the table.

use std::time::Duration;

use super::policy::ForwardSettings;
use super::view::{Endpoint, PoolSettings};
use crate::api::RoutingStrategy;

/// One pool's route as discovery describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// The InferencePool's namespace.
    pub namespace: String,
    /// The InferencePool's name (its metrics' `pool` label).
    pub name: String,
    /// The served model name (`model` in requests).
    pub model: String,
    /// How its agents are picked.
    pub strategy: RoutingStrategy,
    /// Breakers and staleness.
    pub view: PoolSettings,
    /// Retries as a share of requests (the retry budget).
    pub budget_percent: u32,
    /// Retries and queueing.
    pub forward: ForwardSettings,
    /// Longest a request may take.
    pub timeout: Duration,
    /// The session header for session affinity (lower case).
    pub session_header: String,
    /// Most requests held while the pool has no ready agent.
    pub max_held: u32,
}

/// Where discovery puts what it found.
pub trait RouteTable: Send + Sync + 'static {
    /// Serves `spec` under its model name, replacing the route there (a new route starts
    /// with no agents).
    fn set_route(&self, spec: RouteSpec);
    /// Replaces the agents of the route of `model`, keeping the state of those that stay.
    fn set_endpoints(&self, model: &str, endpoints: &[Endpoint]);
    /// Stops serving `model`.
    fn remove_route(&self, model: &str);
}
