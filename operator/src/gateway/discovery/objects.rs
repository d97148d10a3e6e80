//! The translation from cluster objects to what the route table takes, as plain code
//! tested with plain objects: an InferencePool is a route (its served model name, its
//! routing settings), and its agents are the ready addresses of the EndpointSlices of its
//! agent Service, at the `grpc` and `http` ports.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;

use crate::api::InferencePool;
use crate::controller::names::{GRPC_PORT_NAME, HTTP_PORT_NAME, agent_name, served_name};
use crate::gateway::core::policy::ForwardSettings;
use crate::gateway::core::routes::RouteSpec;
use crate::gateway::core::view::{Endpoint, PoolSettings};

/// The label EndpointSlices carry with their Service's name.
pub const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// A load report older than this makes an agent unhealthy.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// A Service (or pool) by namespace and name.
pub type Key = (String, String);

/// The agent Service of `pool`: its EndpointSlices name the pool's agents.
pub fn service_of_pool(pool: &InferencePool) -> Key {
    (pool.namespace().unwrap_or_default(), agent_name(pool))
}

/// The Service that `slice` belongs to, if it names one.
pub fn service_of_slice(slice: &EndpointSlice) -> Option<Key> {
    let service = slice.labels().get(SERVICE_LABEL)?;
    Some((slice.namespace().unwrap_or_default(), service.clone()))
}

/// The slice's port named `name`.
fn port_named(slice: &EndpointSlice, name: &str) -> Option<u16> {
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

/// The ready, not terminating agents of `slice` (none unless it has both agent ports).
pub fn slice_endpoints(slice: &EndpointSlice) -> Vec<Endpoint> {
    let ports = port_named(slice, GRPC_PORT_NAME).zip(port_named(slice, HTTP_PORT_NAME));
    let Some((grpc, http)) = ports else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter(|e| {
            !e.conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false)
        })
        .flat_map(|e| {
            let name = e.target_ref.as_ref().and_then(|r| r.name.clone());
            e.addresses.iter().filter_map(move |a| {
                let ip: IpAddr = a.parse().ok()?;
                let id = name.clone().unwrap_or_else(|| a.clone());
                Some(Endpoint {
                    id,
                    grpc: SocketAddr::new(ip, grpc),
                    http: SocketAddr::new(ip, http),
                })
            })
        })
        .collect()
}

/// The route of `pool`: its served model and its routing settings (its metrics are
/// labelled with the pool's name, as its agents' metrics are by the chart's PodMonitor).
pub fn route_for(pool: &InferencePool, queue_wait: Duration) -> RouteSpec {
    let routing = &pool.spec.routing;
    let view = PoolSettings {
        failure_threshold: u32::try_from(routing.circuit_breaker.failure_threshold).unwrap_or(5),
        cooldown: Duration::from_secs(
            u64::try_from(routing.circuit_breaker.cooldown_seconds).unwrap_or(10),
        ),
        stale_after: STALE_AFTER,
    };
    RouteSpec {
        namespace: pool.namespace().unwrap_or_default(),
        name: pool.name_any(),
        model: served_name(pool),
        strategy: routing.strategy,
        view,
        budget_percent: u32::try_from(routing.retry.budget_percent).unwrap_or(20),
        forward: ForwardSettings {
            max_retries: u32::try_from(routing.retry.max_retries).unwrap_or(2),
            queue_wait,
        },
        timeout: Duration::from_secs(u64::try_from(routing.request_timeout_seconds).unwrap_or(300)),
        session_header: routing.session_header.to_ascii_lowercase(),
        max_held: u32::try_from(routing.max_held_requests).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(ns: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-x"), "namespace": ns,
                "labels": {SERVICE_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 50051}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn ready_addresses_of_a_slice_at_its_grpc_and_http_ports() {
        let slices = [
            slice(
                "ns",
                "p-agent",
                serde_json::json!([
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "p-agent-a"}},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
                    {"addresses": ["10.0.0.4"]},
                ]),
            ),
            slice(
                "other",
                "p-agent",
                serde_json::json!([{"addresses": ["10.9.9.9"]}]),
            ),
            slice(
                "ns",
                "q-agent",
                serde_json::json!([{"addresses": ["10.8.8.8"]}]),
            ),
        ];
        let mut got: Vec<Endpoint> = slices
            .iter()
            .filter(|s| service_of_slice(s) == Some(("ns".into(), "p-agent".into())))
            .flat_map(slice_endpoints)
            .collect();
        got.sort();
        let want = [
            Endpoint {
                id: "10.0.0.4".into(),
                grpc: "10.0.0.4:50051".parse().unwrap(),
                http: "10.0.0.4:8080".parse().unwrap(),
            },
            Endpoint {
                id: "p-agent-a".into(),
                grpc: "10.0.0.1:50051".parse().unwrap(),
                http: "10.0.0.1:8080".parse().unwrap(),
            },
        ];
        assert_eq!(got, want);
        // A Service without both agent ports names no agents (none could be used whole).
        let mut grpc_only = slice(
            "ns",
            "p-agent",
            serde_json::json!([{"addresses": ["10.0.0.5"]}]),
        );
        grpc_only.ports = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "grpc", "port": 50051})).unwrap(),
        ]);
        assert_eq!(slice_endpoints(&grpc_only), []);
    }
}
