//! The gateway's metrics, per pool (its served model name) and agent: requests by outcome
//! (a fixed set of error types), latency, time to first token, queue wait, retries, picks,
//! and each agent's in-flight count, health and circuit state (refreshed at scrape).
//! Labels are pool and agent names and fixed strings, never error text.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Error types the gateway counts by name; anything else is `upstream_error`.
const KNOWN_OUTCOMES: [&str; 13] = [
    "ok",
    "cancelled",
    "invalid_request_error",
    "model_not_found",
    "request_too_large",
    "context_length_exceeded",
    "queue_full",
    "draining",
    "not_ready",
    "pool_saturated",
    "no_healthy_agent",
    "timeout",
    "server_error",
];

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The pool (served model name).
    pub pool: String,
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
    in_flight: Family<AgentLabels, Gauge>,
    healthy: Family<AgentLabels, Gauge>,
    circuit: Family<CircuitLabels, Gauge>,
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
            in_flight: Family::default(),
            healthy: Family::default(),
            circuit: Family::default(),
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
            "Time to first token",
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
        m
    }
}

impl GatewayMetrics {
    /// Starts recording one request to `pool`.
    pub fn start(self: &Arc<Self>, pool: &str) -> RequestRecord {
        RequestRecord {
            metrics: self.clone(),
            pool: pool.to_owned(),
            started: Instant::now(),
            outcome: "cancelled",
        }
    }

    /// Records where a request went and how it got there.
    pub fn forwarded(&self, pick: &PickLabels, retries: u32, queue_wait: f64) {
        let p = PoolLabels {
            pool: pick.pool.clone(),
        };
        self.retries.get_or_create(&p).inc_by(u64::from(retries));
        self.queue_wait.get_or_create(&p).observe(queue_wait);
        self.picks.get_or_create(pick).inc();
    }

    /// Refreshes the per-agent gauges of `pool` from `agents`: (id, in flight, circuit
    /// state, healthy).
    pub fn observe_agents(&self, pool: &str, agents: &[(String, u32, &'static str, bool)]) {
        for (agent, in_flight, state, healthy) in agents {
            let a = AgentLabels {
                pool: pool.to_owned(),
                agent: agent.clone(),
            };
            self.in_flight.get_or_create(&a).set(i64::from(*in_flight));
            self.healthy.get_or_create(&a).set(i64::from(*healthy));
            for s in ["closed", "open", "half_open"] {
                let c = CircuitLabels {
                    pool: pool.to_owned(),
                    agent: agent.clone(),
                    state: s,
                };
                self.circuit.get_or_create(&c).set(i64::from(s == *state));
            }
        }
    }
}

/// One request's record; the outcome and duration are counted when it drops.
#[derive(Debug)]
pub struct RequestRecord {
    metrics: Arc<GatewayMetrics>,
    pool: String,
    started: Instant,
    outcome: &'static str,
}

impl RequestRecord {
    /// The first token arrived.
    pub fn first_token(&self) {
        let p = PoolLabels {
            pool: self.pool.clone(),
        };
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.ttft.get_or_create(&p).observe(seconds);
    }

    /// Sets the outcome: `ok` or an error type (unknown ones count as `upstream_error`).
    pub fn outcome(&mut self, outcome: &str) {
        self.outcome = KNOWN_OUTCOMES
            .into_iter()
            .find(|k| *k == outcome)
            .unwrap_or("upstream_error");
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let p = PoolLabels {
            pool: self.pool.clone(),
        };
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.duration.get_or_create(&p).observe(seconds);
        let o = OutcomeLabels {
            pool: self.pool.clone(),
            outcome: self.outcome,
        };
        self.metrics.requests.get_or_create(&o).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_a_fixed_set_and_agents_show_their_circuit() {
        let m = Arc::new(GatewayMetrics::default());
        m.start("p").outcome("ok");
        m.start("p").outcome("a message an agent made up");
        drop(m.start("p"));
        let pick = PickLabels {
            pool: "p".into(),
            agent: "a0".into(),
            strategy: "round_robin",
        };
        m.forwarded(&pick, 1, 0.002);
        m.observe_agents("p", &[("a0".into(), 2, "open", false)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        for line in [
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"ok\"} 1",
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"upstream_error\"} 1",
            "inferpool_gateway_requests_total{pool=\"p\",outcome=\"cancelled\"} 1",
            "inferpool_gateway_retries_total{pool=\"p\"} 1",
            "inferpool_gateway_picks_total{pool=\"p\",agent=\"a0\",strategy=\"round_robin\"} 1",
            "inferpool_gateway_agent_in_flight{pool=\"p\",agent=\"a0\"} 2",
            "inferpool_gateway_agent_circuit{pool=\"p\",agent=\"a0\",state=\"open\"} 1",
            "inferpool_gateway_agent_circuit{pool=\"p\",agent=\"a0\",state=\"closed\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
