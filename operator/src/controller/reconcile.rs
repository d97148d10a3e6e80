//! One reconcile of one InferencePool: apply its children, then write its status if it
//! changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::children::{config_map, network_policy, pod_disruption_budget, service};
use super::config::{agent_config, render, resolve_source};
use super::decisions::Decisions;
use super::deployment::{AgentImages, DefaultResources, DeploymentInputs, deployment};
use super::error::Error;
use super::metrics::{ControllerMetrics, ErrorLabels};
use super::names::{MANAGER, agent_name, selector_string};
use super::scheduling::gpu_problem;
use super::status::{Observations, Problem, desired_status, reason};
use super::tls::AgentTls;
use crate::api::InferencePool;
use crate::leader::Fence;

/// What every reconcile shares.
pub struct Context {
    /// Metrics of the reconcile loop.
    pub metrics: ControllerMetrics,
    /// Consecutive failures per pool (`namespace/name`), for the error backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Client for the API server.
    pub client: kube::Client,
    /// Event recorder, reporting as the operator.
    pub recorder: Recorder,
    /// Default agent images.
    pub images: AgentImages,
    /// CPU and memory for agents of pools that set none.
    pub resources: DefaultResources,
    /// Base URL of the gateway, for `status.endpoint`.
    pub gateway: Option<String>,
    /// Operator namespace for the agents' NetworkPolicy (none when unset).
    pub network_policy_for: Option<String>,
    /// TLS of the agents' API ports (none: plain).
    pub agent_tls: Option<AgentTls>,
    /// The autoscaler's latest decisions.
    pub decisions: Arc<Decisions>,
    /// Whether this replica may act as the leader now.
    pub fence: Fence,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("images", &self.images)
            .field("gateway", &self.gateway)
            .field("agent_tls", &self.agent_tls)
            .finish()
    }
}

/// How often a settled pool is looked at again even without events.
const RESYNC: Duration = Duration::from_secs(300);
/// When a pool met while fenced is looked at again.
const FENCED_RETRY: Duration = Duration::from_secs(1);

/// Brings one pool's children and status in line with its spec, and records the outcome.
pub async fn reconcile(pool: Arc<InferencePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    use tracing::Instrument as _;
    if !ctx.fence.valid() {
        // Stalled past the lease's grace: another replica may lead. Nothing is written;
        // the controller stops once the stall is noticed, or this runs again.
        ctx.metrics.fenced.inc();
        return Ok(Action::requeue(FENCED_RETRY));
    }
    let key = pool_key(&pool);
    let span = tracing::info_span!("reconcile", pool = %key);
    let start = Instant::now();
    let result = reconcile_pool(&pool, &ctx).instrument(span).await;
    ctx.metrics.duration.observe(start.elapsed().as_secs_f64());
    ctx.metrics.reconciles.inc();
    match &result {
        Ok(_) => drop(lock(&ctx.failures).remove(&key)),
        Err(e) => drop(
            ctx.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    error_type: e.error_type(),
                })
                .inc(),
        ),
    }
    result
}

/// `namespace/name` of a pool, for logs and the backoff table.
pub fn pool_key(pool: &InferencePool) -> String {
    format!(
        "{}/{}",
        pool.namespace().unwrap_or_default(),
        pool.name_any()
    )
}

/// The failure table stays usable even if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn reconcile_pool(pool: &InferencePool, ctx: &Context) -> Result<Action, Error> {
    let ns = pool.namespace().ok_or(Error::NoNamespace)?;
    let (deployment, problem) = match apply_children(pool, ctx, &ns).await? {
        Ok(deployment) => (Some(deployment), scheduling_problem(pool, ctx, &ns).await?),
        Err(problem) => (None, Some(problem)),
    };
    if let Some(problem) = &problem {
        warn_event(pool, ctx, problem).await;
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let scaling = ctx.decisions.of(&pool_key(pool));
    let seen = Observations {
        scaling: scaling.as_ref(),
        deployment: deployment.as_ref(),
        problem: problem.as_ref(),
        gateway: ctx.gateway.as_deref(),
        now: &now,
    };
    write_status(pool, ctx, &ns, &seen).await?;
    Ok(Action::requeue(RESYNC))
}

/// Applies the children; `Ok(Err(problem))` when the spec cannot be realised.
async fn apply_children(
    pool: &InferencePool,
    ctx: &Context,
    ns: &str,
) -> Result<Result<Deployment, Problem>, Error> {
    let source = match resolve_source(&pool.spec.model.source) {
        Ok(source) => source,
        Err(e) => {
            let problem = Problem {
                reason: reason::MODEL_SOURCE_INVALID,
                message: e.to_string(),
            };
            return Ok(Err(problem));
        }
    };
    let (rendered, checksum) = render(&agent_config(pool, &source));
    apply(pool, ctx, ns, config_map(pool, &rendered)).await?;
    apply(pool, ctx, ns, service(pool)).await?;
    sync_pdb(pool, ctx, ns).await?;
    if let Some(operator_ns) = &ctx.network_policy_for {
        let policy = network_policy(pool, operator_ns, ctx.agent_tls.is_some());
        apply(pool, ctx, ns, policy).await?;
    }
    let inputs = DeploymentInputs {
        images: &ctx.images,
        resources: &ctx.resources,
        source: &source,
        config_checksum: &checksum,
        tls: ctx.agent_tls.as_ref(),
    };
    Ok(Ok(apply(pool, ctx, ns, deployment(pool, &inputs)).await?))
}

async fn scheduling_problem(
    pool: &InferencePool,
    ctx: &Context,
    ns: &str,
) -> Result<Option<Problem>, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&selector_string(pool)))
        .await?;
    Ok(gpu_problem(&pool.spec.resources, &list.items))
}

async fn sync_pdb(pool: &InferencePool, ctx: &Context, ns: &str) -> Result<(), Error> {
    match pod_disruption_budget(pool) {
        Some(pdb) => apply(pool, ctx, ns, pdb).await.map(drop),
        None => {
            let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
            match api
                .delete(&agent_name(pool), &DeleteParams::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Server-side applies `child`, owned by `pool`, and returns what the server holds.
async fn apply<K>(pool: &InferencePool, ctx: &Context, ns: &str, mut child: K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let owner = pool.controller_owner_ref(&()).ok_or(Error::NoUid)?;
    child.meta_mut().owner_references = Some(vec![owner]);
    let name = child.name_any();
    let mut value = serde_json::to_value(&child).map_err(|source| Error::Serialize {
        kind: <K as k8s_openapi::Resource>::KIND,
        source,
    })?;
    value["apiVersion"] = <K as k8s_openapi::Resource>::API_VERSION.into();
    value["kind"] = <K as k8s_openapi::Resource>::KIND.into();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(&value)).await?)
}

/// Writes the status when it changed. The cached pool may predate this controller's own
/// last status write (its watch event not yet seen); a changed status is therefore checked
/// once more against the pool as the API server has it, so that a condition's transition
/// is not stamped twice.
async fn write_status(
    pool: &InferencePool,
    ctx: &Context,
    ns: &str,
    seen: &Observations<'_>,
) -> Result<(), Error> {
    if pool.status.as_ref() == Some(&desired_status(pool, seen)) {
        return Ok(());
    }
    let api: Api<InferencePool> = Api::namespaced(ctx.client.clone(), ns);
    // Only the status is taken from the server: generation and spec stay those reconciled.
    let mut latest = pool.clone();
    latest.status = api.get_status(&pool.name_any()).await?.status;
    let status = desired_status(&latest, seen);
    if latest.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": "inferpool.dev/v1alpha1", "kind": "InferencePool", "status": status,
    });
    let params = PatchParams::apply(MANAGER).force();
    api.patch_status(&pool.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

async fn warn_event(pool: &InferencePool, ctx: &Context, problem: &Problem) {
    let event = Event {
        type_: EventType::Warning,
        reason: problem.reason.to_owned(),
        note: Some(problem.message.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}
