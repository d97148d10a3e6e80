//! Names and labels shared by a pool's children.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::InferencePool;

/// Field manager for every server-side apply by the operator.
pub const MANAGER: &str = "inferpool-operator";
/// Label naming the pool an object belongs to.
pub const POOL_LABEL: &str = "inferpool.dev/pool";
/// `app.kubernetes.io/name` of every object made for a pool's agents (and so of the
/// EndpointSlices of their Service, which carry the Service's labels).
pub const AGENT_APP: &str = "inferpool-agent";
/// A label selector for exactly those objects: the controller watches its children and
/// the gateway its agents' EndpointSlices through it, never every object of a kind.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=inferpool-agent";
/// The agent's HTTP port (OpenAI API, /healthz, /readyz, /metrics).
pub const HTTP_PORT: i32 = 8080;
/// The agent's gRPC port (Agent service, grpc.health.v1).
pub const GRPC_PORT: i32 = 50051;
/// The names of those ports on the agent's pods and Service (the chart's PodMonitor
/// scrapes the HTTP one).
pub const HTTP_PORT_NAME: &str = "http";
/// See [`HTTP_PORT_NAME`].
pub const GRPC_PORT_NAME: &str = "grpc";
/// The agent's plain-HTTP health port (/healthz, /readyz, /metrics), opened only when its
/// API ports speak TLS: kubelet's probes and Prometheus cannot use those.
pub const HEALTH_PORT: i32 = 8082;
/// The name of [`HEALTH_PORT`] on the agent's pods.
pub const HEALTH_PORT_NAME: &str = "health";
/// Where the agent's rendered configuration is mounted.
pub const CONFIG_DIR: &str = "/etc/inferpool";
/// File name of the rendered configuration inside the ConfigMap.
pub const CONFIG_FILE: &str = "agent.json";

/// Name of the agent Deployment, Service, ConfigMap and PodDisruptionBudget of `pool`.
pub fn agent_name(pool: &InferencePool) -> String {
    format!("{}-agent", pool.name_any())
}

/// Labels that select the pool's agent pods.
pub fn selector_labels(pool: &InferencePool) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), AGENT_APP.to_owned()),
        (POOL_LABEL.to_owned(), pool.name_any()),
    ])
}

/// Labels on every child (a superset of the selector).
pub fn labels(pool: &InferencePool) -> BTreeMap<String, String> {
    let mut labels = selector_labels(pool);
    labels.insert("app.kubernetes.io/instance".to_owned(), pool.name_any());
    labels.insert("app.kubernetes.io/component".to_owned(), "agent".to_owned());
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGER.to_owned(),
    );
    labels
}

/// The selector as a string, for `status.selector` and the scale subresource.
pub fn selector_string(pool: &InferencePool) -> String {
    selector_labels(pool)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The name clients send as `model`: `spec.model.servedName`, else the pool's name.
pub fn served_name(pool: &InferencePool) -> String {
    pool.spec
        .model
        .served_name
        .clone()
        .unwrap_or_else(|| pool.name_any())
}
