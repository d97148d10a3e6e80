//! The exact permissions the operator needs, written once: `inferpool-operator rbac` prints
//! them, the chart ships them, and an e2e test runs the operator with nothing more.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Name of the operator's ClusterRole, Role and ServiceAccount.
pub const NAME: &str = "inferpool-operator";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// Cluster-wide rules: pools in every namespace and the children the controller owns.
pub fn cluster_role() -> ClusterRole {
    const WATCH: [&str; 3] = ["get", "list", "watch"];
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
            rule("apps", &["deployments"], &APPLY),
            rule("", &["services", "configmaps"], &APPLY),
            rule(
                "policy",
                &["poddisruptionbudgets"],
                &["get", "list", "watch", "create", "patch", "delete"],
            ),
            rule("networking.k8s.io", &["networkpolicies"], &APPLY),
            rule("", &["pods"], &WATCH),
            // The gateway finds each pool's agents through their Service's EndpointSlices.
            rule("discovery.k8s.io", &["endpointslices"], &WATCH),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
        ]),
        ..ClusterRole::default()
    }
}

/// Rules in the operator's own namespace: the leader Lease.
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

/// Just the rules of the ClusterRole and of the Role, as YAML lists (the chart includes
/// them into its own templated roles).
pub fn rules_yaml() -> Result<(String, String), serde_saphyr::SerializeError> {
    let cluster = serde_saphyr::to_string(&cluster_role().rules.unwrap_or_default())?;
    let lease = serde_saphyr::to_string(&lease_role("").rules.unwrap_or_default())?;
    Ok((cluster, lease))
}

/// Both roles as one YAML stream.
pub fn rbac_yaml(namespace: &str) -> Result<String, serde_saphyr::SerializeError> {
    let cluster = serde_saphyr::to_string(&with_kind(cluster_role(), "ClusterRole"))?;
    let role = serde_saphyr::to_string(&with_kind(lease_role(namespace), "Role"))?;
    Ok(format!("---\n{cluster}---\n{role}"))
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
        let role = cluster_role();
        for rule in role.rules.unwrap_or_default() {
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
    }
}
