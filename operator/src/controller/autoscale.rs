//! The built-in autoscaler's decision (issue #22), as plain values: from the agents' load
//! reports and the requests the gateways hold, how many agents a pool wants now. Scale-up
//! is immediate and by as many agents as the load needs (bounded by `MAX_STEP_UP` and
//! `maxReplicas`); scale-down is one agent at a time, after the load stayed below target
//! for `scaleDownDelaySeconds`. No I/O here: the leader feeds it and writes the result
//! through the scale subresource.

use std::time::{Duration, Instant};

use crate::api::AutoscalingSpec;

/// Most agents one decision adds beyond doubling the pool: a burst from zero to 8 is one
/// decision of 8, never eight of one (KubeAI's issue 229), but a pool of 2 does not jump to
/// 500 on one noisy report.
pub const MAX_STEP_UP: i32 = 8;

/// One agent's last load report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentLoad {
    /// Sequences in its batches.
    pub running: u32,
    /// Requests in its queues.
    pub queued: u32,
    /// Batch slots it reports (all its serving replicas).
    pub max_batch_size: u32,
}

/// What the autoscaler sees of a pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The agent Deployment's replicas now (`spec.replicas` of the pool).
    pub replicas: i32,
    /// The reports of its ready agents.
    pub agents: Vec<AgentLoad>,
    /// Requests the gateways hold for the pool (no agent free, or none at all).
    pub held: u32,
    /// Batch slots an agent has per the pool's spec (for a pool with no agent to report).
    pub slots_per_agent: u32,
}

/// Why the count is what it is (a status condition's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// More load than the agents hold at the target: grown.
    ScaledUp,
    /// Load below target for the whole delay: one agent fewer.
    ScaledDown,
    /// Load at target, or below it for less than the delay.
    Steady,
    /// More is needed than `maxReplicas` allows.
    AtMaximum,
}

impl Reason {
    /// The condition reason's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaledUp => "ScaledUp",
            Self::ScaledDown => "ScaledDown",
            Self::Steady => "Steady",
            Self::AtMaximum => "AtMaximum",
        }
    }
}

/// A decision: the replicas wanted, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Agents the pool should run.
    pub replicas: i32,
    /// Why.
    pub reason: Reason,
    /// Agents the load needs at the target, before the bounds.
    pub needed: i32,
}

/// One pool's autoscaler: remembers since when its load has been below target.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    low_since: Option<Instant>,
}

impl Autoscaler {
    /// The replicas `spec` wants for what is observed at `now`.
    pub fn decide(&mut self, spec: &AutoscalingSpec, seen: &Observation, now: Instant) -> Decision {
        let needed = needed(spec, seen);
        let (min, max) = (spec.min_replicas.max(0), spec.max_replicas.max(1));
        let current = seen.replicas.max(0);
        if needed > current || current < min {
            self.low_since = None;
            return scale_up(current, needed.max(min), max);
        }
        if needed == current || current <= min {
            self.low_since = None;
            return Decision {
                replicas: current.min(max),
                reason: Reason::Steady,
                needed,
            };
        }
        let since = *self.low_since.get_or_insert(now);
        let delay = Duration::from_secs(u64::try_from(spec.scale_down_delay_seconds).unwrap_or(0));
        if now.duration_since(since) < delay {
            return Decision {
                replicas: current.min(max),
                reason: Reason::Steady,
                needed,
            };
        }
        // One step, then the delay starts over: the next agent goes only if the load stays
        // low without this one.
        self.low_since = None;
        Decision {
            replicas: (current - 1).min(max),
            reason: Reason::ScaledDown,
            needed,
        }
    }
}

/// Agents the load needs so that each runs at `targetLoad`: the work (running, queued,
/// held at the gateways) over the slots one agent gives at the target, rounded up.
pub fn needed(spec: &AutoscalingSpec, seen: &Observation) -> i32 {
    let work: u64 = seen
        .agents
        .iter()
        .map(|a| u64::from(a.running) + u64::from(a.queued))
        .sum::<u64>()
        + u64::from(seen.held);
    if work == 0 {
        return 0;
    }
    let reported: Vec<u32> = seen
        .agents
        .iter()
        .map(|a| a.max_batch_size)
        .filter(|s| *s > 0)
        .collect();
    let slots = match reported.len() {
        0 => f64::from(seen.slots_per_agent.max(1)),
        n => reported.iter().map(|s| f64::from(*s)).sum::<f64>() / n as f64,
    };
    let per_agent = slots * spec.target_load.clamp(0.01, 1.0);
    let agents = (work as f64 / per_agent).ceil();
    if agents >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        agents as i32
    }
}

fn scale_up(current: i32, needed: i32, max: i32) -> Decision {
    let step = current.max(MAX_STEP_UP);
    let wanted = needed.min(current.saturating_add(step));
    let replicas = wanted.min(max);
    let reason = if needed > max && replicas == max {
        Reason::AtMaximum
    } else if replicas > current {
        Reason::ScaledUp
    } else {
        Reason::Steady
    };
    Decision {
        replicas,
        reason,
        needed,
    }
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;
