//! The headless Service, ConfigMap, PodDisruptionBudget and NetworkPolicy of a pool.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{
    CONFIG_FILE, GRPC_PORT, GRPC_PORT_NAME, HEALTH_PORT, HTTP_PORT, HTTP_PORT_NAME, agent_name,
    labels, selector_labels,
};
use crate::api::InferencePool;

fn meta(pool: &InferencePool) -> ObjectMeta {
    ObjectMeta {
        name: Some(agent_name(pool)),
        labels: Some(labels(pool)),
        ..ObjectMeta::default()
    }
}

/// A headless Service over the agents: its EndpointSlices are how gateways find them.
pub fn service(pool: &InferencePool) -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        app_protocol: Some(
            if name == GRPC_PORT_NAME {
                "kubernetes.io/h2c"
            } else {
                "http"
            }
            .to_owned(),
        ),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(pool),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(pool)),
            ports: Some(vec![
                port(HTTP_PORT_NAME, HTTP_PORT),
                port(GRPC_PORT_NAME, GRPC_PORT),
            ]),
            // Gateways track readiness themselves from load reports; they still want to see
            // starting agents early.
            publish_not_ready_addresses: Some(false),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The ConfigMap holding the rendered agent configuration.
pub fn config_map(pool: &InferencePool, rendered: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(pool),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            rendered.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// A PodDisruptionBudget allowing one agent down at a time, when there is more than one.
pub fn pod_disruption_budget(pool: &InferencePool) -> Option<PodDisruptionBudget> {
    (pool.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(pool),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pool)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// A NetworkPolicy for the pool's agents: gRPC (streamed generation, load reports, drain)
/// only from the gateway's and the controller's pods in the operator's namespace (the
/// controller's autoscaler follows the agents' load over gRPC); the HTTP port (OpenAI API,
/// which the gateway also uses for whole answers; probes, metrics) stays open, and so does
/// the health port that TLS agents (`tls`) add for probes and metrics.
pub fn network_policy(pool: &InferencePool, operator_namespace: &str, tls: bool) -> NetworkPolicy {
    let from = [GATEWAY_APP, OPERATOR_APP].map(|app| peer(operator_namespace, app));
    let port = |number: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    let mut open = vec![port(HTTP_PORT)];
    if tls {
        open.push(port(HEALTH_PORT));
    }
    NetworkPolicy {
        metadata: meta(pool),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pool)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(from.to_vec()),
                    ports: Some(vec![port(GRPC_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(open),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// The pods labelled `app.kubernetes.io/name: app` in `namespace`.
fn peer(namespace: &str, app: &str) -> NetworkPolicyPeer {
    let labels = |key: &str, value: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        ..LabelSelector::default()
    };
    NetworkPolicyPeer {
        namespace_selector: Some(labels("kubernetes.io/metadata.name", namespace)),
        pod_selector: Some(labels("app.kubernetes.io/name", app)),
        ..NetworkPolicyPeer::default()
    }
}

/// `app.kubernetes.io/name` of the gateway's pods (set by the chart).
pub const GATEWAY_APP: &str = "inferpool-gateway";
/// `app.kubernetes.io/name` of the controller's pods (set by the chart).
pub const OPERATOR_APP: &str = "inferpool-operator";
