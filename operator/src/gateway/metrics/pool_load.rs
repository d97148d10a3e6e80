//! Per-pool gauges to scale on (an HPA through a Prometheus adapter, or KEDA's Prometheus
//! trigger): the work the pool's agents last reported and the requests this gateway holds
//! for the pool. The agent-derived gauges are the same on every gateway replica (each one
//! subscribes to every agent), so aggregate them with `max by (pool)`; held requests are
//! each replica's own, so `sum by (pool)`. Refreshed at scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::PoolLabels;
use crate::gateway::core::pick::Reported;

/// What one pool's gauges show.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PoolLoad {
    /// Requests waiting at this gateway for an agent (none ready, or none free).
    pub held: u32,
    /// Sequences in the agents' batches.
    pub running: u64,
    /// Requests in the agents' queues.
    pub queued: u64,
    /// Batch slots of the agents that reported.
    pub slots: u64,
    /// Mean KV-cache utilisation of the agents that reported, 0..=1.
    pub kv_usage: f64,
}

impl PoolLoad {
    /// The gauges of a pool holding `held` requests whose agents last reported `reports`.
    pub fn of(held: u32, reports: &[Reported]) -> Self {
        let sum = |f: fn(&Reported) -> u32| reports.iter().map(|r| u64::from(f(r))).sum();
        let kv_usage = match reports.len() {
            0 => 0.0,
            n => reports.iter().map(|r| r.kv_usage).sum::<f64>() / n as f64,
        };
        Self {
            held,
            running: sum(|r| r.running),
            queued: sum(|r| r.queued),
            slots: sum(|r| r.max_batch_size),
            kv_usage,
        }
    }

    /// Running plus queued over the batch slots: what the built-in autoscaler compares
    /// with `targetLoad` (held requests come on top).
    pub fn load(&self) -> f64 {
        (self.running + self.queued) as f64 / self.slots.max(1) as f64
    }
}

type Gauges = Family<PoolLabels, Gauge>;
type Ratios = Family<PoolLabels, Gauge<f64, AtomicU64>>;

/// The gauge families.
#[derive(Debug, Default)]
pub(super) struct PoolLoadGauges {
    held: Gauges,
    running: Gauges,
    queued: Gauges,
    slots: Gauges,
    kv_usage: Ratios,
    load: Ratios,
}

impl PoolLoadGauges {
    pub(super) fn register(&self, r: &mut Registry) {
        let held =
            "Requests this gateway holds for an agent of the pool (none ready, or none free)";
        r.register("held_requests", held, self.held.clone());
        let running = "Sequences in the pool's agents' batches, as they last reported";
        r.register("pool_running", running, self.running.clone());
        let queued = "Requests in the pool's agents' queues, as they last reported";
        r.register("pool_queued", queued, self.queued.clone());
        let slots = "Batch slots of the pool's agents that reported";
        r.register("pool_batch_slots", slots, self.slots.clone());
        let kv = "Mean KV-cache utilisation of the pool's agents, 0 to 1";
        r.register("pool_kv_usage", kv, self.kv_usage.clone());
        let load = "Running plus queued over batch slots (compare with targetLoad)";
        r.register("pool_load", load, self.load.clone());
    }

    pub(super) fn observe(&self, labels: &PoolLabels, load: &PoolLoad) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.held.get_or_create(labels).set(i64::from(load.held));
        self.running.get_or_create(labels).set(int(load.running));
        self.queued.get_or_create(labels).set(int(load.queued));
        self.slots.get_or_create(labels).set(int(load.slots));
        self.kv_usage.get_or_create(labels).set(load.kv_usage);
        self.load.get_or_create(labels).set(load.load());
    }

    pub(super) fn remove(&self, labels: &PoolLabels) {
        self.held.remove(labels);
        self.running.remove(labels);
        self.queued.remove(labels);
        self.slots.remove(labels);
        self.kv_usage.remove(labels);
        self.load.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(running: u32, queued: u32, slots: u32, kv_usage: f64) -> Reported {
        Reported {
            running,
            queued,
            max_batch_size: slots,
            kv_usage,
            ..Reported::default()
        }
    }

    #[test]
    fn a_pool_sums_its_agents_work_and_averages_their_kv_usage() {
        let load = PoolLoad::of(3, &[report(4, 2, 8, 0.5), report(8, 6, 8, 1.0)]);
        assert_eq!(
            (load.held, load.running, load.queued, load.slots),
            (3, 12, 8, 16)
        );
        assert!((load.kv_usage - 0.75).abs() < 1e-9);
        assert!((load.load() - 1.25).abs() < 1e-9);
    }

    #[test]
    fn a_pool_at_zero_shows_only_what_it_holds() {
        let load = PoolLoad::of(5, &[]);
        assert_eq!(
            load,
            PoolLoad {
                held: 5,
                ..PoolLoad::default()
            }
        );
        assert_eq!(load.load(), 0.0);
    }

    #[test]
    fn a_pools_gauges_show_at_scrape_and_go_with_the_pool() {
        let m = super::super::GatewayMetrics::default();
        m.observe_agents("p", &[("a0".into(), 1, "closed", true)]);
        m.observe_pool("p", &PoolLoad::of(2, &[report(1, 0, 4, 0.25)]));
        let scrape = || {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &m.registry)
                .map(|()| text)
                .unwrap_or_default()
        };
        let text = scrape();
        for line in [
            "inferpool_gateway_held_requests{pool=\"p\"} 2",
            "inferpool_gateway_pool_running{pool=\"p\"} 1",
            "inferpool_gateway_pool_batch_slots{pool=\"p\"} 4",
            "inferpool_gateway_pool_kv_usage{pool=\"p\"} 0.25",
            "inferpool_gateway_pool_load{pool=\"p\"} 0.25",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        m.retain_pools(&[]);
        assert!(!scrape().contains("pool=\"p\""));
    }
}
