//! The pool's status, computed from its Deployment: counts, selector and conditions.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::decisions::Scaling;
use super::names::{selector_string, served_name};
use crate::api::{ConditionType, InferencePool, InferencePoolStatus};

/// Stable condition reasons (machine-readable; the message carries the details).
pub mod reason {
    /// Every desired agent is ready at the current generation.
    pub const AGENTS_READY: &str = "AgentsReady";
    /// A rollout or scale is under way.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// Nothing is changing.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// The pool is scaled to zero.
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// The model source cannot be realised.
    pub const MODEL_SOURCE_INVALID: &str = "ModelSourceInvalid";
    /// Agents cannot be scheduled for lack of GPUs.
    pub const INSUFFICIENT_GPUS: &str = "InsufficientGPUs";
    /// No problem found.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// What went wrong with the pool's spec, if anything (for the Degraded condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One of the `reason` constants.
    pub reason: &'static str,
    /// Human-readable details.
    pub message: String,
}

/// Counts observed on the pool's Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Observed {
    desired: i32,
    replicas: i32,
    ready: i32,
    updated: i32,
    current_generation: bool,
}

fn observe(pool: &InferencePool, deployment: Option<&Deployment>) -> Observed {
    let Some(d) = deployment else {
        return Observed {
            desired: pool.spec.replicas,
            ..Observed::default()
        };
    };
    let s = d.status.clone().unwrap_or_default();
    Observed {
        desired: d.spec.replicas.unwrap_or(1),
        replicas: s.replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        current_generation: s.observed_generation >= d.metadata.generation,
    }
}

/// What the status is computed from, besides the pool.
#[derive(Debug)]
pub struct Observations<'a> {
    /// The pool's Deployment, when it exists.
    pub deployment: Option<&'a Deployment>,
    /// What is wrong with the spec, if anything.
    pub problem: Option<&'a Problem>,
    /// Base URL of the gateway that serves the pool (`.../v1`), when known.
    pub gateway: Option<&'a str>,
    /// Stamp for conditions that change now.
    pub now: &'a Time,
    /// The autoscaler's latest decision, for an autoscaled pool.
    pub scaling: Option<&'a Scaling>,
}

/// The status the pool should have. Conditions whose status did not change keep their
/// transition time.
pub fn desired_status(pool: &InferencePool, seen: &Observations<'_>) -> InferencePoolStatus {
    let (problem, now) = (seen.problem, seen.now);
    let o = observe(pool, seen.deployment);
    let generation = pool.metadata.generation;
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let settled = o.current_generation
        && o.updated == o.desired
        && o.ready == o.desired
        && o.replicas == o.desired;
    let (ready, ready_reason, ready_msg) = match (problem, o.desired) {
        (Some(p), _) => (false, p.reason, p.message.clone()),
        (None, 0) => (
            false,
            reason::SCALED_TO_ZERO,
            "the pool has no agents".to_owned(),
        ),
        (None, _) if settled => (
            true,
            reason::AGENTS_READY,
            format!("{} of {} agents ready", o.ready, o.desired),
        ),
        (None, _) => (
            false,
            reason::ROLLOUT_IN_PROGRESS,
            format!("{} of {} agents ready", o.ready, o.desired),
        ),
    };
    let (progressing, progress_reason) = if settled || problem.is_some() {
        (false, reason::ROLLOUT_COMPLETE)
    } else {
        (true, reason::ROLLOUT_IN_PROGRESS)
    };
    let progress_msg = format!("{} of {} agents updated", o.updated, o.desired);
    let (degraded, degraded_reason, degraded_msg) = match problem {
        Some(p) => (true, p.reason, p.message.clone()),
        None => (false, reason::AS_EXPECTED, "no problem found".to_owned()),
    };
    let cond = |t: ConditionType, status: bool, reason: &str, message: String| {
        condition(previous, t, status, reason, message, generation, now)
    };
    let mut conditions = vec![
        cond(ConditionType::Ready, ready, ready_reason, ready_msg),
        cond(
            ConditionType::Progressing,
            progressing,
            progress_reason,
            progress_msg,
        ),
        cond(
            ConditionType::Degraded,
            degraded,
            degraded_reason,
            degraded_msg,
        ),
    ];
    if pool.spec.autoscaling.is_some() {
        let (active, why, message) = seen
            .scaling
            .map_or((false, "Pending", "no decision yet".to_owned()), |s| {
                (s.active, s.reason, s.message.clone())
            });
        conditions.push(cond(ConditionType::ScalingActive, active, why, message));
    }
    InferencePoolStatus {
        replicas: o.replicas,
        ready_replicas: o.ready,
        selector: Some(selector_string(pool)),
        observed_generation: generation,
        endpoint: seen
            .gateway
            .map(|g| format!("{g} (model \"{}\")", served_name(pool))),
        conditions,
    }
}

fn condition(
    previous: &[Condition],
    type_: ConditionType,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.as_str().to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}
