//! Picking an agent for a request: one small module per strategy, each a pure function of
//! plain values (the candidates the pool offers and the request's keys), so each is tested
//! without a network. Candidates are already filtered to agents that may take traffic
//! (healthy, breaker closed or probing, not draining).

mod affinity;
mod least_load;
mod round_robin;
mod two_choices;
mod weighted;

pub use affinity::{PrefixAffinity, SessionAffinity};
pub use least_load::{LeastConnections, LeastLoad};
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use crate::api::RoutingStrategy;

/// An agent's load as it last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    /// Requests waiting in its queue.
    pub queued: u32,
    /// Sequences in its batch.
    pub running: u32,
    /// Most sequences per batch.
    pub max_batch_size: u32,
    /// KV-cache utilisation, 0..=1.
    pub kv_usage: f64,
    /// Its devices by health.
    pub devices: DeviceCounts,
}

/// How many of an agent's devices are in each health state (all zero: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    /// Serving.
    pub healthy: u32,
    /// Serving, but hot, throttled or erroring.
    pub degraded: u32,
    /// Not serving.
    pub failed: u32,
    /// Reloading the model.
    pub recovering: u32,
}

impl DeviceCounts {
    /// Whether any device may take requests (an agent that reports none is taken at its
    /// word that it serves).
    pub fn schedulable(&self) -> bool {
        self.healthy + self.degraded > 0 || *self == Self::default()
    }

    /// How much a request there costs against one on a healthy agent: 1, up to 2 when
    /// every serving device is degraded, so that degraded agents get less traffic.
    pub fn cost(&self) -> f64 {
        let serving = self.healthy + self.degraded;
        match serving {
            0 => 1.0,
            _ => 1.0 + f64::from(self.degraded) / f64::from(serving),
        }
    }
}

/// What a picker sees of one agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate<'a> {
    /// The agent's id (stable across reconnects).
    pub id: &'a str,
    /// Requests this gateway has in flight on it.
    pub in_flight: u32,
    /// Its last load report.
    pub reported: Reported,
}

impl Candidate<'_> {
    /// Load as a fraction of capacity: the queue, the batch and this gateway's requests not
    /// yet reflected in a report, per batch slot, plus KV-cache pressure.
    pub fn load(&self) -> f64 {
        let r = &self.reported;
        let slots = f64::from(r.max_batch_size.max(1));
        let work = f64::from(r.queued) + f64::from(r.running.max(self.in_flight));
        // Degraded devices make its work count for more, and an idle degraded agent still
        // costs more than an idle healthy one.
        let cost = r.devices.cost();
        (work * cost + cost - 1.0) / slots + r.kv_usage
    }

    /// Requests occupying it, for bounded-load affinity.
    pub fn occupancy(&self) -> u32 {
        self.reported.queued + self.reported.running.max(self.in_flight)
    }
}

/// What about a request the pickers may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestKey<'a> {
    /// The start of the prompt (for prefix affinity).
    pub prefix: &'a str,
    /// The session (header or `user`), for session affinity.
    pub session: Option<&'a str>,
}

/// A strategy.
pub trait Pick: Send + Sync + std::fmt::Debug {
    /// The index in `candidates` of the agent to use; `None` only when it is empty.
    fn pick(&self, candidates: &[Candidate<'_>], key: &RequestKey<'_>) -> Option<usize>;
}

/// The picker for a pool's `routing.strategy`.
/// The strategy's name as the pool spells it (a metric label).
/// Every strategy's name (label sets that name one are enumerated from it).
pub const STRATEGY_NAMES: [&str; 6] = [
    "round_robin",
    "least_connections",
    "weighted",
    "least_load",
    "prefix_affinity",
    "session_affinity",
];

pub fn strategy_name(strategy: RoutingStrategy) -> &'static str {
    match strategy {
        RoutingStrategy::RoundRobin => "round_robin",
        RoutingStrategy::LeastConnections => "least_connections",
        RoutingStrategy::Weighted => "weighted",
        RoutingStrategy::LeastLoad => "least_load",
        RoutingStrategy::PrefixAffinity => "prefix_affinity",
        RoutingStrategy::SessionAffinity => "session_affinity",
    }
}

pub fn picker(strategy: RoutingStrategy) -> Box<dyn Pick> {
    match strategy {
        RoutingStrategy::RoundRobin => Box::new(RoundRobin::default()),
        RoutingStrategy::LeastConnections => Box::new(LeastConnections::default()),
        RoutingStrategy::Weighted => Box::new(Weighted::default()),
        RoutingStrategy::LeastLoad => Box::new(LeastLoad::default()),
        RoutingStrategy::PrefixAffinity => Box::new(PrefixAffinity::default()),
        RoutingStrategy::SessionAffinity => Box::new(SessionAffinity::default()),
    }
}

/// A small, fast, lock-free pseudo-random sequence (xorshift), for tie-breaks and
/// weighted draws; quality is irrelevant here, speed and no locking are not.
#[derive(Debug)]
pub(crate) struct Rng(std::sync::atomic::AtomicU64);

impl Default for Rng {
    fn default() -> Self {
        Self::seeded(0x9E37_79B9_7F4A_7C15)
    }
}

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(seed | 1))
    }

    pub(crate) fn next(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let mut x = self.0.load(Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Relaxed);
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Candidates named a0, a1, ... with the given in-flight counts and reports.
    pub fn candidates(ids: &[String], loads: &[(u32, Reported)]) -> Vec<Candidate<'static>> {
        ids.iter()
            .zip(loads)
            .map(|(id, &(in_flight, reported))| Candidate {
                id: Box::leak(id.clone().into_boxed_str()),
                in_flight,
                reported,
            })
            .collect()
    }

    pub fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("a{i}")).collect()
    }

    pub fn idle(slots: u32) -> Reported {
        Reported {
            max_batch_size: slots,
            ..Reported::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_is_among_the_names() {
        use RoutingStrategy::{
            LeastConnections, LeastLoad, PrefixAffinity, RoundRobin, SessionAffinity, Weighted,
        };
        let all = [
            RoundRobin,
            LeastConnections,
            Weighted,
            LeastLoad,
            PrefixAffinity,
            SessionAffinity,
        ];
        for s in all {
            // A new strategy fails to compile here first, so that it joins `all` too.
            match s {
                RoundRobin | LeastConnections | Weighted | LeastLoad | PrefixAffinity
                | SessionAffinity => {}
            }
            assert!(STRATEGY_NAMES.contains(&strategy_name(s)));
        }
        assert_eq!(all.len(), STRATEGY_NAMES.len());
    }
}

#[cfg(test)]
mod health_tests {
    use super::testing::*;
    use super::*;

    fn with_devices(healthy: u32, degraded: u32) -> Reported {
        Reported {
            devices: DeviceCounts {
                healthy,
                degraded,
                failed: 1,
                recovering: 0,
            },
            ..idle(4)
        }
    }

    #[test]
    fn degraded_devices_raise_an_agents_load_and_none_serving_means_no_traffic() {
        let ids = ids(3);
        let c = candidates(
            &ids,
            &[
                (0, idle(4)),
                (0, with_devices(1, 1)),
                (0, with_devices(0, 2)),
            ],
        );
        let loads: Vec<f64> = c.iter().map(Candidate::load).collect();
        assert_eq!(loads[0], 0.0);
        assert!(loads[0] < loads[1] && loads[1] < loads[2], "{loads:?}");
        // Two running on a healthy agent cost more than nothing on a degraded one...
        let busy = Candidate {
            in_flight: 2,
            ..c[0]
        };
        assert!(busy.load() > c[2].load());
        // ... and the same work costs more on the degraded one.
        let degraded_busy = Candidate {
            in_flight: 2,
            ..c[2]
        };
        assert!(degraded_busy.load() > busy.load());
        assert!(with_devices(0, 1).devices.schedulable());
        assert!(!with_devices(0, 0).devices.schedulable());
        assert!(
            DeviceCounts::default().schedulable(),
            "an agent that reports none serves"
        );
    }
}
