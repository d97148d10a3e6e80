//! The exact permissions the controller and the gateway need, written once:
//! `inferpool-operator rbac` prints them, the chart ships them (one ServiceAccount per
//! Deployment), and e2e tests run each with nothing more.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the controller's ClusterRole, Role and ServiceAccount.
pub const NAME: &str = "inferpool-operator";
/// Name of the gateway's ClusterRole and ServiceAccount.
pub const GATEWAY_NAME: &str = "inferpool-gateway";

const WATCH: [&str; 3] = ["get", "list", "watch"];

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// The controller's cluster-wide rules: pools in every namespace and the children it owns.
pub fn cluster_role() -> ClusterRole {
    const APPLY: [&str; 5] = ["get", "list", "watch", "create", "patch"];
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule("inferpool.dev", &["inferencepools"], &WATCH),
            rule(
                "inferpool.dev",
                &["inferencepools/status"],
                &["get", "patch"],
            ),
            // Owner references with blockOwnerDeletion need this where the
            // OwnerReferencesPermissionEnforcement admission plugin is on.
            rule("inferpool.dev", &["inferencepools/finalizers"], &["update"]),
            // The built-in autoscaler: it writes replicas through the scale subresource,
            // reads the agents' EndpointSlices (to subscribe to their load), and stands
            // aside for HorizontalPodAutoscalers (KEDA's among them).
            rule(
                "inferpool.dev",
                &["inferencepools/scale"],
                &["get", "patch"],
            ),
            rule("discovery.k8s.io", &["endpointslices"], &WATCH),
            rule("autoscaling", &["horizontalpodautoscalers"], &WATCH),
            rule("apps", &["deployments"], &APPLY),
            rule("", &["services", "configmaps"], &APPLY),
            rule(
                "policy",
                &["poddisruptionbudgets"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            rule("networking.k8s.io", &["networkpolicies"], &APPLY),
            rule("", &["pods"], &WATCH),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
        ]),
        ..ClusterRole::default()
    }
}

/// The gateway's rules: it reads pools and the EndpointSlices of their agents, in every
/// namespace (it serves the pools of all of them), and patches pools only to tell the
/// leader how many requests it holds for want of an agent (its own
/// `held.inferpool.dev/<pod>` annotation; see `controller::demand`).
pub fn gateway_role() -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(GATEWAY_NAME.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule("inferpool.dev", &["inferencepools"], &WATCH),
            rule("inferpool.dev", &["inferencepools"], &["patch"]),
            rule("discovery.k8s.io", &["endpointslices"], &WATCH),
        ]),
        ..ClusterRole::default()
    }
}

/// Rules in the controller's own namespace: the leader Lease.
pub fn lease_role(namespace: &str) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "patch", "update"],
        )]),
    }
}

/// One role's set of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// The controller's ClusterRole.
    Controller,
    /// The controller's Role (leader Lease).
    Lease,
    /// The gateway's ClusterRole.
    Gateway,
}

/// Just the rules of one role, as a YAML list (the chart includes them into its own
/// templated roles).
pub fn rules_yaml(of: Rules) -> Result<String, serde_saphyr::SerializeError> {
    let rules = match of {
        Rules::Controller => cluster_role().rules,
        Rules::Lease => lease_role("").rules,
        Rules::Gateway => gateway_role().rules,
    };
    serde_saphyr::to_string(&rules.unwrap_or_default())
}

/// Every role as one YAML stream.
pub fn rbac_yaml(namespace: &str) -> Result<String, serde_saphyr::SerializeError> {
    let cluster = serde_saphyr::to_string(&with_kind(cluster_role(), "ClusterRole"))?;
    let role = serde_saphyr::to_string(&with_kind(lease_role(namespace), "Role"))?;
    let gateway = serde_saphyr::to_string(&with_kind(gateway_role(), "ClusterRole"))?;
    Ok(format!("---\n{cluster}---\n{role}---\n{gateway}"))
}

fn with_kind<T: serde::Serialize>(object: T, kind: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    value["apiVersion"] = "rbac.authorization.k8s.io/v1".into();
    value["kind"] = kind.into();
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wildcards_and_no_secrets() {
        let rules = [cluster_role().rules, gateway_role().rules];
        for rule in rules.into_iter().flatten().flatten() {
            assert!(!rule.verbs.iter().any(|v| v == "*"));
            let resources = rule.resources.unwrap_or_default();
            assert!(!resources.iter().any(|r| r == "*" || r == "secrets"));
        }
    }

    #[test]
    fn yaml_names_both_kinds() {
        let yaml = rbac_yaml("ops").unwrap();
        assert!(yaml.contains("kind: ClusterRole") && yaml.contains("kind: Role"));
        assert!(yaml.contains("namespace: ops"));
        assert!(yaml.contains(&format!("name: {GATEWAY_NAME}")));
    }

    #[test]
    fn the_gateway_only_reads_but_for_its_demand_on_pools() {
        for rule in gateway_role().rules.unwrap_or_default() {
            let demand = rule.resources == Some(vec!["inferencepools".to_owned()])
                && rule.verbs == ["patch"];
            assert!(rule.verbs == WATCH || demand, "{rule:?}");
        }
    }
}
