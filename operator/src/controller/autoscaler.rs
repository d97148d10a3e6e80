//! The built-in autoscaler, run by the leader beside the reconciler: once a second, each
//! pool with `spec.autoscaling` gets a decision (`autoscale`) from its agents' load
//! reports (`loads`) and the requests its gateways hold (`demand`), written through the
//! pool's scale subresource with an event. A pool that a HorizontalPodAutoscaler targets
//! (KEDA's ScaledObjects make one too) is left to it. Each pool's latest decision is kept
//! for its `ScalingActive` condition, which the reconciler writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource as _, ResourceExt as _};
use tokio::sync::mpsc;

use super::autoscale::{Autoscaler, Decision, Observation};
use super::decisions::{Decisions, Scaling};
use super::demand::held_requests;
use super::loads::PoolLoads;
use super::reconcile::pool_key;
use crate::api::{AutoscalingSpec, InferencePool};
use crate::leader::Fence;

/// How often every pool is looked at.
pub const TICK: Duration = Duration::from_secs(1);

/// Why a pool's `ScalingActive` condition is what it is.
pub mod reason {
    /// A HorizontalPodAutoscaler targets the pool: the built-in one stands aside.
    pub const HPA: &str = "HorizontalPodAutoscaler";
    /// Discovery has not found the pool's agents' Service yet.
    pub const LOAD_UNKNOWN: &str = "LoadUnknown";
}

/// What the autoscaler reads and writes.
#[allow(missing_debug_implementations)] // kube's Client and Recorder are not Debug
pub struct AutoscalerParts {
    /// The cluster.
    pub client: kube::Client,
    /// The reconciler's pools.
    pub pools: Store<InferencePool>,
    /// Every HorizontalPodAutoscaler.
    pub hpas: Store<HorizontalPodAutoscaler>,
    /// The agents' loads.
    pub loads: Arc<PoolLoads>,
    /// Where decisions go for the status.
    pub decisions: Arc<Decisions>,
    /// Events, as the operator.
    pub recorder: Recorder,
    /// Told when a pool's condition changed, so that its status is written.
    pub changed: mpsc::Sender<()>,
    /// Whether this replica may act as the leader now.
    pub fence: Fence,
}

/// Scales every autoscaled pool, once per `TICK`, until dropped.
pub async fn run_autoscaler(parts: AutoscalerParts) {
    let mut scalers: HashMap<String, Autoscaler> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if !parts.fence.valid() {
            // Stalled past the lease's grace: another replica may be scaling.
            continue;
        }
        for pool in parts.pools.state() {
            if let Some(spec) = &pool.spec.autoscaling {
                let scaler = scalers.entry(pool_key(&pool)).or_default();
                parts.scale(&pool, spec, scaler).await;
            }
        }
    }
}

impl AutoscalerParts {
    async fn scale(&self, pool: &InferencePool, spec: &AutoscalingSpec, scaler: &mut Autoscaler) {
        let key = pool_key(pool);
        if let Some(hpa) = self.hpa_of(pool) {
            let message = format!(
                "the HorizontalPodAutoscaler {hpa} scales this pool; the built-in autoscaler stands aside"
            );
            return self.note(key, false, reason::HPA, message).await;
        }
        let Some(seen) = self.observe(pool) else {
            let message = "the agents' Service is not discovered yet".to_owned();
            return self.note(key, false, reason::LOAD_UNKNOWN, message).await;
        };
        let decision = scaler.decide(spec, &seen, Instant::now());
        if decision.replicas != seen.replicas {
            if let Err(e) = self.write_scale(pool, decision.replicas).await {
                tracing::warn!(pool = %key, error = %e, "cannot write the pool's scale");
                return;
            }
            self.event(pool, &seen, &decision).await;
        }
        let message = describe(spec, &seen, &decision);
        self.note(key, true, decision.reason.as_str(), message)
            .await;
    }

    fn observe(&self, pool: &InferencePool) -> Option<Observation> {
        let ns = pool.namespace().unwrap_or_default();
        let agents = self.loads.agents_of(&ns, &pool.name_any())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(Observation {
            replicas: pool.spec.replicas,
            agents,
            held: held_requests(pool.annotations(), now),
            slots_per_agent: u32::try_from(pool.spec.batching.max_batch_size).unwrap_or(1),
        })
    }

    /// The HorizontalPodAutoscaler that targets `pool`, if one does.
    fn hpa_of(&self, pool: &InferencePool) -> Option<String> {
        let ns = pool.namespace();
        self.hpas
            .state()
            .into_iter()
            .find(|h| {
                let target = &h.spec.scale_target_ref;
                h.namespace() == ns
                    && target.kind == "InferencePool"
                    && target.name == pool.name_any()
            })
            .map(|h| h.name_any())
    }

    async fn write_scale(&self, pool: &InferencePool, replicas: i32) -> Result<(), kube::Error> {
        let ns = pool.namespace().unwrap_or_default();
        let api: Api<InferencePool> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        api.patch_scale(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map(drop)
    }

    async fn event(&self, pool: &InferencePool, seen: &Observation, decision: &Decision) {
        let event = Event {
            type_: EventType::Normal,
            reason: decision.reason.as_str().to_owned(),
            note: Some(format!(
                "{} -> {} agents ({} needed for the load)",
                seen.replicas, decision.replicas, decision.needed
            )),
            action: "Scale".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pool.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }

    async fn note(&self, key: String, active: bool, reason: &'static str, message: String) {
        let scaling = Scaling {
            active,
            reason,
            message,
        };
        if self.decisions.record(key, scaling) {
            // Full: a reconcile of every pool is queued already.
            let _ = self.changed.try_send(());
        }
    }
}

/// The condition's message: what the load needs and what the pool runs.
fn describe(spec: &AutoscalingSpec, seen: &Observation, decision: &Decision) -> String {
    let work: u32 = seen
        .agents
        .iter()
        .map(|a| a.running + a.queued)
        .sum::<u32>()
        + seen.held;
    format!(
        "{work} requests ({} held at gateways) need {} agents at targetLoad {}; {} wanted (min {}, max {})",
        seen.held,
        decision.needed,
        spec.target_load,
        decision.replicas,
        spec.min_replicas,
        spec.max_replicas
    )
}
