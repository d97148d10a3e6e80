//! The gateway's metrics, per pool (the InferencePool's name) and agent: requests by outcome
//! (a fixed set of error types), latency and time to first token (each per pool, and per
//! agent for requests an agent answered), queue wait, retries, picks, the agents known, and
//! each agent's in-flight count, health and circuit state (refreshed at scrape; an agent
//! or a pool that is gone loses all its series).
//! Labels are pool and agent names and fixed strings, never error text.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, Weak};

use inferpool_protocol::errors::ErrorType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod devices;
pub mod keys;
mod pool_load;
mod record;

pub use pool_load::PoolLoad;
use record::PoolSeries;
pub use record::{PoolMetrics, RequestRecord};

use super::core::pick::{DeviceCounts, STRATEGY_NAMES};

/// The `pool` label of requests refused before they matched a pool: not a valid Kubernetes
/// name, so no InferencePool's label can be the same.
pub const UNROUTED: &str = "_none";

/// How many outcomes are counted: `ok`, `cancelled` and every stable error type (the last
/// of them `upstream_error`, which also counts anything else).
const OUTCOMES: usize = 2 + ErrorType::ALL.len();

/// Outcomes the gateway counts by name, `upstream_error` last.
const OUTCOME_NAMES: [&str; OUTCOMES] = outcome_names();

const fn outcome_names() -> [&'static str; OUTCOMES] {
    let mut names = ["ok"; OUTCOMES];
    names[1] = "cancelled";
    let mut i = 0;
    while i < ErrorType::ALL.len() {
        names[2 + i] = ErrorType::ALL[i].name();
        i += 1;
    }
    names
}

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The pool.
    pub pool: String,
    /// `ok` or an error type.
    pub outcome: &'static str,
}

/// A request's labels on the agent that answered it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentOutcomeLabels {
    /// The pool.
    pub pool: String,
    /// The agent.
    pub agent: String,
    /// `ok` or an error type.
    pub outcome: &'static str,
}

/// A pool's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// The pool.
    pub pool: String,
}

/// An agent's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    /// The pool.
    pub pool: String,
    /// The agent.
    pub agent: String,
}

/// Where a request was sent, and by which strategy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PickLabels {
    /// The pool.
    pub pool: String,
    /// The agent picked.
    pub agent: String,
    /// The pool's routing strategy.
    pub strategy: &'static str,
}

/// An agent's circuit state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CircuitLabels {
    /// The pool.
    pub pool: String,
    /// The agent.
    pub agent: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
}

type Histograms = Family<PoolLabels, Histogram, fn() -> Histogram>;
type AgentHistograms = Family<AgentLabels, Histogram, fn() -> Histogram>;

/// Every metric of the gateway.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// The registry they live in (served at the gateway's /metrics).
    pub registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    duration: Histograms,
    ttft: Histograms,
    queue_wait: Histograms,
    retries: Family<PoolLabels, Counter>,
    picks: Family<PickLabels, Counter>,
    agent_requests: Family<AgentOutcomeLabels, Counter>,
    agent_duration: AgentHistograms,
    agent_ttft: AgentHistograms,
    agents: Family<PoolLabels, Gauge>,
    in_flight: Family<AgentLabels, Gauge>,
    healthy: Family<AgentLabels, Gauge>,
    circuit: Family<CircuitLabels, Gauge>,
    devices: devices::AgentDevices,
    pool_load: pool_load::PoolLoadGauges,
    /// Usage per API key.
    pub keys: keys::KeyMetrics,
    /// The agents each pool's gauges were last set for.
    observed: Mutex<HashMap<String, Vec<String>>>,
    /// Every pool's series made (a pool's is made again when its route changes), whose
    /// agent caches forget agents that are gone.
    series: Mutex<Vec<Weak<PoolSeries>>>,
    unrouted: OnceLock<PoolMetrics>,
}

fn latency() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            ttft: Family::new_with_constructor(latency),
            queue_wait: Family::new_with_constructor(latency),
            retries: Family::default(),
            picks: Family::default(),
            agent_requests: Family::default(),
            agent_duration: Family::new_with_constructor(latency),
            agent_ttft: Family::new_with_constructor(latency),
            agents: Family::default(),
            in_flight: Family::default(),
            healthy: Family::default(),
            circuit: Family::default(),
            devices: devices::AgentDevices::default(),
            pool_load: pool_load::PoolLoadGauges::default(),
            keys: keys::KeyMetrics::default(),
            observed: Mutex::default(),
            series: Mutex::default(),
            unrouted: OnceLock::new(),
        };
        let r = m.registry.sub_registry_with_prefix("inferpool_gateway");
        r.register(
            "requests",
            "Requests ended, by pool and outcome",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request duration",
            m.duration.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time to first token of streamed requests (a whole answer's first token is not seen)",
            m.ttft.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Wait for a free agent",
            m.queue_wait.clone(),
        );
        r.register(
            "retries",
            "Requests retried on another agent",
            m.retries.clone(),
        );
        r.register("picks", "Requests sent to each agent", m.picks.clone());
        r.register(
            "agent_requests",
            "Requests ended on the agent that answered them, by outcome",
            m.agent_requests.clone(),
        );
        r.register(
            "agent_request_duration_seconds",
            "Request duration, by the agent that answered",
            m.agent_duration.clone(),
        );
        r.register(
            "agent_time_to_first_token_seconds",
            "Time to first token of streamed requests, by the agent that answered",
            m.agent_ttft.clone(),
        );
        r.register(
            "agents",
            "Agents the gateway knows, healthy or not",
            m.agents.clone(),
        );
        r.register(
            "agent_in_flight",
            "Requests in flight per agent",
            m.in_flight.clone(),
        );
        r.register(
            "agent_healthy",
            "1 while an agent takes traffic",
            m.healthy.clone(),
        );
        r.register(
            "agent_circuit",
            "1 for each agent's circuit state",
            m.circuit.clone(),
        );
        m.devices.register(r);
        m.pool_load.register(r);
        m.keys.register(r);
        m
    }
}

impl GatewayMetrics {
    /// The series of `pool` (routed by `strategy`), created now so that requests find them
    /// without a label lookup.
    pub fn pool(&self, pool: &str, strategy: &'static str) -> PoolMetrics {
        PoolMetrics::new(pool, strategy, self)
    }

    /// The series of requests refused before they matched a pool (pool [`UNROUTED`], so
    /// that labels never come from unknown model names).
    pub fn unrouted(&self) -> &PoolMetrics {
        self.unrouted.get_or_init(|| self.pool(UNROUTED, "none"))
    }

    /// Refreshes the gauges of `pool` from its `agents`: (id, in flight, circuit state,
    /// healthy); the gauges of agents no longer there are removed.
    pub fn observe_agents(&self, pool: &str, agents: &[(String, u32, &'static str, bool)]) {
        let known = i64::try_from(agents.len()).unwrap_or(i64::MAX);
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        self.agents.get_or_create(&labels).set(known);
        for (agent, in_flight, state, healthy) in agents {
            let a = AgentLabels {
                pool: pool.to_owned(),
                agent: agent.clone(),
            };
            self.in_flight.get_or_create(&a).set(i64::from(*in_flight));
            self.healthy.get_or_create(&a).set(i64::from(*healthy));
            for s in CIRCUIT_STATES {
                let c = CircuitLabels {
                    pool: pool.to_owned(),
                    agent: agent.clone(),
                    state: s,
                };
                self.circuit.get_or_create(&c).set(i64::from(s == *state));
            }
        }
        let ids = agents.iter().map(|(id, ..)| id.clone()).collect();
        self.forget_gone(pool, ids);
    }

    /// Refreshes each agent's device gauges from its last report: (id, devices by health).
    pub fn observe_devices(&self, pool: &str, agents: &[(String, DeviceCounts)]) {
        for (agent, counts) in agents {
            self.devices.observe(pool, agent, counts);
        }
    }

    /// Refreshes the gauges to scale `pool` on.
    pub fn observe_pool(&self, pool: &str, load: &PoolLoad) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        self.pool_load.observe(&labels, load);
    }

    /// Removes the series of every pool not in `pools` (pools that went away) and of their
    /// agents.
    pub fn retain_pools(&self, pools: &[&str]) {
        let Ok(mut observed) = self.observed.lock() else {
            return;
        };
        observed.retain(|pool, agents| {
            let keep = pools.contains(&pool.as_str());
            if !keep {
                agents
                    .iter()
                    .for_each(|a| self.remove_agent_series(pool, a));
                self.remove_pool_series(pool);
            }
            keep
        });
    }

    fn remove_pool_series(&self, pool: &str) {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        self.agents.remove(&labels);
        self.pool_load.remove(&labels);
        self.duration.remove(&labels);
        self.ttft.remove(&labels);
        self.queue_wait.remove(&labels);
        self.retries.remove(&labels);
        for outcome in OUTCOME_NAMES {
            self.requests.remove(&OutcomeLabels {
                pool: pool.to_owned(),
                outcome,
            });
        }
    }

    /// Removes the series of `pool`'s agents that are not among `ids`.
    fn forget_gone(&self, pool: &str, ids: Vec<String>) {
        let Ok(mut observed) = self.observed.lock() else {
            return;
        };
        let before = observed.remove(pool).unwrap_or_default();
        for gone in before.iter().filter(|a| !ids.contains(a)) {
            self.remove_agent_series(pool, gone);
        }
        observed.insert(pool.to_owned(), ids);
    }

    /// Removes every series of `agent` in `pool`: with pods coming and going, the series
    /// of agents long gone would otherwise pile up until the operator restarts.
    fn remove_agent_series(&self, pool: &str, agent: &str) {
        let a = AgentLabels {
            pool: pool.to_owned(),
            agent: agent.to_owned(),
        };
        self.in_flight.remove(&a);
        self.healthy.remove(&a);
        self.devices.remove(pool, agent);
        self.agent_duration.remove(&a);
        self.agent_ttft.remove(&a);
        for outcome in OUTCOME_NAMES {
            self.agent_requests.remove(&AgentOutcomeLabels {
                pool: pool.to_owned(),
                agent: agent.to_owned(),
                outcome,
            });
        }
        for strategy in STRATEGY_NAMES {
            self.picks.remove(&PickLabels {
                pool: pool.to_owned(),
                agent: agent.to_owned(),
                strategy,
            });
        }
        self.forget_cached(pool, agent);
        for state in CIRCUIT_STATES {
            self.circuit.remove(&CircuitLabels {
                pool: pool.to_owned(),
                agent: agent.to_owned(),
                state,
            });
        }
    }
}

impl GatewayMetrics {
    /// Keeps `series` to be told of agents that are gone.
    fn track(&self, series: &std::sync::Arc<PoolSeries>) {
        if let Ok(mut all) = self.series.lock() {
            all.retain(|s| s.strong_count() > 0);
            all.push(std::sync::Arc::downgrade(series));
        }
    }

    /// Drops `agent` from the caches of `pool`'s series (were it to come back, its series
    /// are made anew).
    fn forget_cached(&self, pool: &str, agent: &str) {
        let Ok(all) = self.series.lock() else { return };
        for series in all.iter().filter_map(Weak::upgrade) {
            series.forget_agent(pool, agent);
        }
    }
}

/// An agent's circuit states, each a gauge of 0 or 1.
const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_error_type_is_an_outcome_of_its_own() {
        assert_eq!(OUTCOME_NAMES[OUTCOMES - 1], "upstream_error");
        for kind in ErrorType::ALL {
            assert!(OUTCOME_NAMES.contains(&kind.name()), "{kind:?}");
        }
        assert!(OUTCOME_NAMES.contains(&"deadline_exceeded"));
    }

    #[test]
    fn outcomes_are_a_fixed_set_and_agents_show_their_circuit() {
        let m = GatewayMetrics::default();
        let p = m.pool("p", "round_robin");
        p.start().outcome("ok");
        p.start().outcome("a message an agent made up");
        drop(p.start());
        let mut on_a0 = p.start();
        on_a0.forwarded("a0", 1, Duration::from_millis(2));
        on_a0.first_token();
        on_a0.outcome("ok");
        drop(on_a0);
        let mut timed_out = p.start();
        timed_out.forwarded("a0", 0, Duration::ZERO);
        timed_out.outcome("timeout");
        drop(timed_out);
        m.unrouted().start().outcome("model_not_found");
        let q = m.pool("q", "least_load");
        let mut on_b1 = q.start();
        on_b1.forwarded("b1", 1, Duration::ZERO);
        on_b1.outcome("ok");
        drop(on_b1);
        m.observe_agents("q", &[("b0".into(), 0, "closed", true)]);
        m.observe_agents("q", &[("b1".into(), 1, "closed", true)]);
        m.observe_agents("p", &[("a0".into(), 2, "open", false)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        for line in [
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"ok\"} 2",
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"timeout\"} 1",
            "inferpool_gateway_agent_requests_total{pool=\"p\",agent=\"a0\",outcome=\"ok\"} 1",
            "inferpool_gateway_agent_requests_total{pool=\"p\",agent=\"a0\",outcome=\"timeout\"} 1",
            "inferpool_gateway_agent_request_duration_seconds_count{pool=\"p\",agent=\"a0\"} 2",
            "inferpool_gateway_agent_time_to_first_token_seconds_count{pool=\"p\",agent=\"a0\"} 1",
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"upstream_error\"} 1",
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"cancelled\"} 1",
            "inferpool_gateway_retries_total{pool=\"p\"} 1",
            "inferpool_gateway_picks_total{pool=\"p\",agent=\"a0\",strategy=\"round_robin\"} 2",
            "inferpool_gateway_requests_total{pool=\"_none\",outcome=\"model_not_found\"} 1",
            "inferpool_gateway_queue_wait_seconds_count{pool=\"p\"} 2",
            "inferpool_gateway_agent_in_flight{pool=\"p\",agent=\"a0\"} 2",
            "inferpool_gateway_agent_circuit{pool=\"p\",agent=\"a0\",state=\"open\"} 1",
            "inferpool_gateway_agent_circuit{pool=\"p\",agent=\"a0\",state=\"closed\"} 0",
            "inferpool_gateway_agents{pool=\"p\"} 1",
            "inferpool_gateway_agents{pool=\"q\"} 1",
            "inferpool_gateway_agent_healthy{pool=\"q\",agent=\"b1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // An agent that is gone keeps no gauges, nor does a pool that is gone.
        assert!(!text.contains("agent=\"b0\""), "{text}");
        m.retain_pools(&["p"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(
            !text.contains("agent=\"b1\"") && text.contains("agent=\"a0\""),
            "{text}"
        );
        assert!(
            !text.contains("pool=\"q\""),
            "a gone pool keeps no series: {text}"
        );
        // An agent that goes away takes its counters and histograms along; were it to come
        // back, they would start again.
        m.observe_agents("p", &[]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        assert!(!text.contains("agent=\"a0\""), "{text}");
        let mut again = p.start();
        again.forwarded("a0", 0, Duration::ZERO);
        again.outcome("ok");
        drop(again);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        let ok = "inferpool_gateway_agent_requests_total{pool=\"p\",agent=\"a0\",outcome=\"ok\"} 1";
        assert!(text.lines().any(|l| l == ok), "{text}");
    }
}
