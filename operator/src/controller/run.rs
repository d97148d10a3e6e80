//! The controller's event loop: watch pools and their children, reconcile on change.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;

use super::deployment::AgentImages;
use super::error::Error;
use super::names::MANAGER;
use super::reconcile::{Context, reconcile};
use crate::api::InferencePool;

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Default agent images.
    pub images: AgentImages,
    /// Base URL of the gateway, for `status.endpoint`.
    pub gateway: Option<String>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    client: kube::Client,
    settings: ControllerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), MANAGER.into()),
        client: client.clone(),
        images: settings.images,
        gateway: settings.gateway,
    });
    let cfg = watcher::Config::default;
    Controller::new(Api::<InferencePool>::all(client.clone()), cfg())
        .owns(Api::<Deployment>::all(client.clone()), cfg())
        .owns(Api::<Service>::all(client.clone()), cfg())
        .owns(Api::<ConfigMap>::all(client.clone()), cfg())
        .owns(Api::<PodDisruptionBudget>::all(client), cfg())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => tracing::debug!(pool = %pool, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// Requeues a failed pool soon; the API server's own conflicts settle within seconds.
fn error_policy(pool: Arc<InferencePool>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        pool = %format!("{}/{}", pool.metadata.namespace.as_deref().unwrap_or_default(),
            pool.metadata.name.as_deref().unwrap_or_default()),
        error_type = error.error_type(),
        error = %error,
        "reconcile error"
    );
    Action::requeue(Duration::from_secs(5))
}
