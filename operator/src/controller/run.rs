//! The controller's event loop: watch pools and their children, reconcile on change.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::autoscaler::{AutoscalerParts, run_autoscaler};
use super::decisions::Decisions;
use super::deployment::{AgentImages, DefaultResources};
use super::error::Error;
use super::loads::PoolLoads;
use super::metrics::ControllerMetrics;
use super::names::{AGENT_SELECTOR, MANAGER, POOL_LABEL};
use super::reconcile::{Context, lock, pool_key, reconcile};
use super::tls::AgentTls;
use super::watch_backoff::watch_backoff;
use crate::api::InferencePool;
use crate::gateway::discovery::{Discovery as _, KubernetesDiscovery};
use crate::gateway::upstream::channel::UpstreamSettings;
use crate::leader::Fence;

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Default agent images.
    pub images: AgentImages,
    /// CPU and memory for agents of pools that set none.
    pub resources: DefaultResources,
    /// Base URL of the gateway, for `status.endpoint`.
    pub gateway: Option<String>,
    /// The operator's namespace, when agents get a NetworkPolicy admitting gRPC only from
    /// the operator's pods there.
    pub network_policy_for: Option<String>,
    /// TLS of the agents' API ports, rendered into their pods (none: plain).
    pub agent_tls: Option<AgentTls>,
    /// How the autoscaler's load subscriptions dial the agents (their TLS included).
    pub upstream: UpstreamSettings,
    /// Whether the leader may act now (see `leader::Fence`); none outside an election.
    pub fence: Fence,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run_controller(
    client: kube::Client,
    settings: ControllerSettings,
    metrics: ControllerMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let decisions = Arc::new(Decisions::default());
    let ctx = Arc::new(Context {
        decisions: decisions.clone(),
        metrics,
        failures: Default::default(),
        recorder: Recorder::new(client.clone(), MANAGER.into()),
        client: client.clone(),
        images: settings.images,
        resources: settings.resources,
        gateway: settings.gateway,
        network_policy_for: settings.network_policy_for,
        agent_tls: settings.agent_tls,
        fence: settings.fence.clone(),
    });
    // Children carry the agent labels: watching only those keeps every other Deployment,
    // Service, ConfigMap... of the cluster out of the controller's memory and queue.
    let children = || watcher::Config::default().labels(AGENT_SELECTOR);
    let controller = Controller::new(
        Api::<InferencePool>::all(client.clone()),
        watcher::Config::default(),
    );
    let (changed, reconcile_all) = mpsc::channel(1);
    let mut scaling = spawn_autoscaler(
        &ctx,
        controller.store(),
        PoolLoads::new(settings.upstream),
        changed,
    );
    controller
        .trigger_backoff(watch_backoff())
        .reconcile_all_on(ReceiverStream::new(reconcile_all))
        .owns(Api::<Deployment>::all(client.clone()), children())
        .owns(Api::<Service>::all(client.clone()), children())
        .owns(Api::<ConfigMap>::all(client.clone()), children())
        .owns(Api::<PodDisruptionBudget>::all(client.clone()), children())
        .owns(Api::<NetworkPolicy>::all(client.clone()), children())
        // Agent pods belong to ReplicaSets, not to the pool: map them back by label, so that
        // scheduling problems show up in the pool's status.
        .watches(Api::<Pod>::all(client.clone()), children(), pool_of_pod)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => tracing::debug!(pool = %pool, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    scaling.abort_all();
}

/// Starts the autoscaler and what feeds it: the agents' load (through EndpointSlice
/// discovery, as the gateway finds them) and the HorizontalPodAutoscalers it stands aside
/// for. The tasks end when the returned set is dropped or aborted.
fn spawn_autoscaler(
    ctx: &Context,
    pools: Store<InferencePool>,
    loads: PoolLoads,
    changed: mpsc::Sender<()>,
) -> JoinSet<()> {
    let client = &ctx.client;
    let mut tasks = JoinSet::new();
    let loads = Arc::new(loads);
    let discovery = KubernetesDiscovery {
        client: client.clone(),
        queue_wait: Duration::ZERO,
        synced: Arc::default(),
    };
    tasks.spawn(discovery.run(loads.clone()));
    let (hpas, writer) = reflector::store();
    let hpa_watch = watcher::watcher(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        Default::default(),
    )
    .default_backoff()
    .reflect(writer)
    .for_each(|_| async {});
    tasks.spawn(hpa_watch);
    tasks.spawn(run_autoscaler(AutoscalerParts {
        client: client.clone(),
        pools,
        hpas,
        loads,
        decisions: ctx.decisions.clone(),
        recorder: ctx.recorder.clone(),
        changed,
        fence: ctx.fence.clone(),
    }));
    tasks
}

fn pool_of_pod(pod: Pod) -> Option<ObjectRef<InferencePool>> {
    let name = pod.metadata.labels.as_ref()?.get(POOL_LABEL)?;
    Some(ObjectRef::new(name).within(pod.metadata.namespace.as_deref()?))
}

/// Requeues a failed pool with a backoff that doubles per consecutive failure.
fn error_policy(pool: Arc<InferencePool>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = pool_key(&pool);
    let failures = {
        let mut table = lock(&ctx.failures);
        let n = table.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(failures);
    tracing::warn!(pool = %key, error_type = error.error_type(), error = %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// 1 s after the first failure, doubling, at most 5 minutes.
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
