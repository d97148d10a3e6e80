//! Small helpers about InferencePools shared by the e2e tests.

use std::time::Duration;

use inferpool_operator::api::InferencePool;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;

/// A pool manifest with `spec` written inline (flow YAML).
pub fn pool_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

/// `(status, reason)` of the pool's condition `type_`.
pub fn condition(pool: &InferencePool, type_: &str) -> Option<(String, String)> {
    let c = pool
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Waits until the pool reports Ready at its current generation, and returns it.
pub async fn until_ready(
    pools: &Api<InferencePool>,
    name: &str,
    limit: Duration,
) -> anyhow::Result<InferencePool> {
    crate::wait::wait_until(limit, || async {
        let p = pools.get(name).await.ok()?;
        let current = p.status.as_ref()?.observed_generation == p.metadata.generation;
        (current && condition(&p, "Ready")?.0 == "True").then_some(p)
    })
    .await
}

/// resourceVersions of the pool and of its Deployment, Service and ConfigMap: equal
/// before and after means nothing was written.
pub async fn versions(
    client: &kube::Client,
    ns: &str,
    pool: &str,
) -> anyhow::Result<Vec<Option<String>>> {
    let child = format!("{pool}-agent");
    Ok(vec![
        Api::<InferencePool>::namespaced(client.clone(), ns)
            .get(pool)
            .await?
            .metadata
            .resource_version,
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get(&child)
            .await?
            .metadata
            .resource_version,
        Api::<Service>::namespaced(client.clone(), ns)
            .get(&child)
            .await?
            .metadata
            .resource_version,
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(&child)
            .await?
            .metadata
            .resource_version,
    ])
}
