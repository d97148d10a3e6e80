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
    CONFIG_FILE, GRPC_PORT, GRPC_PORT_NAME, HTTP_PORT, HTTP_PORT_NAME, agent_name, labels,
    selector_labels,
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
/// only from the gateway's pods (the controller never dials agents); the HTTP port (OpenAI API, which
/// the gateway also uses for whole answers; probes, metrics) stays open.
pub fn network_policy(pool: &InferencePool, gateway_namespace: &str) -> NetworkPolicy {
    let from_gateway = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                gateway_namespace.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                GATEWAY_APP.to_owned(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let port = |number: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
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
                    from: Some(vec![from_gateway]),
                    ports: Some(vec![port(GRPC_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(HTTP_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// `app.kubernetes.io/name` of the gateway's pods (set by the chart).
pub const GATEWAY_APP: &str = "inferpool-gateway";
