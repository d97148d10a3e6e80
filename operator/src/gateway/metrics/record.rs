//! What one request records: its pool's series, resolved once per pool, and once it is
//! forwarded, the series of the agent that answered (resolved when the agent is first
//! picked), so that requests do no label lookups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::{
    AgentHistograms, AgentLabels, AgentOutcomeLabels, GatewayMetrics, OUTCOME_NAMES, OUTCOMES,
    OutcomeLabels, PickLabels, PoolLabels,
};

/// One pool's series: what a request records, without label lookups (cheap to clone).
#[derive(Debug, Clone)]
pub struct PoolMetrics(Arc<PoolSeries>);

#[derive(Debug)]
pub(super) struct PoolSeries {
    pool: String,
    strategy: &'static str,
    duration: Histogram,
    ttft: Histogram,
    queue_wait: Histogram,
    retries: Counter,
    requests: Family<OutcomeLabels, Counter>,
    outcomes: OutcomeCounters,
    families: AgentFamilies,
    /// Each agent's series once it was picked.
    agents: Mutex<HashMap<String, Arc<AgentSeries>>>,
}

/// The families per-agent series are made in.
#[derive(Debug)]
struct AgentFamilies {
    picks: Family<PickLabels, Counter>,
    requests: Family<AgentOutcomeLabels, Counter>,
    duration: AgentHistograms,
    ttft: AgentHistograms,
}

/// One agent's series within a pool.
#[derive(Debug)]
struct AgentSeries {
    labels: AgentLabels,
    picks: Counter,
    duration: Histogram,
    ttft: Histogram,
    outcomes: OutcomeCounters,
}

/// Each outcome's counter of one series, resolved when that outcome is first counted
/// (index: `outcome_index`).
#[derive(Debug, Default)]
struct OutcomeCounters([OnceLock<Counter>; OUTCOMES]);

impl OutcomeCounters {
    /// Counts `outcome`, whose counter `make` resolves (from the outcome's name) the first
    /// time.
    fn inc(&self, outcome: usize, make: impl FnOnce(&'static str) -> Counter) {
        self.0[outcome]
            .get_or_init(|| make(OUTCOME_NAMES[outcome]))
            .inc();
    }
}

impl AgentSeries {
    fn new(labels: AgentLabels, strategy: &'static str, f: &AgentFamilies) -> Self {
        let picks = PickLabels {
            pool: labels.pool.clone(),
            agent: labels.agent.clone(),
            strategy,
        };
        Self {
            picks: f.picks.get_or_create(&picks).clone(),
            duration: f.duration.get_or_create(&labels).clone(),
            ttft: f.ttft.get_or_create(&labels).clone(),
            outcomes: Default::default(),
            labels,
        }
    }

    fn count(&self, outcome: usize, family: &Family<AgentOutcomeLabels, Counter>) {
        self.outcomes.inc(outcome, |name| {
            let labels = AgentOutcomeLabels {
                pool: self.labels.pool.clone(),
                agent: self.labels.agent.clone(),
                outcome: name,
            };
            family.get_or_create(&labels).clone()
        });
    }
}

impl PoolMetrics {
    /// `pool`'s series (routed by `strategy`) in `metrics`' families.
    pub(super) fn new(pool: &str, strategy: &'static str, metrics: &GatewayMetrics) -> Self {
        let labels = PoolLabels {
            pool: pool.to_owned(),
        };
        let series = Arc::new(PoolSeries {
            pool: pool.to_owned(),
            strategy,
            duration: metrics.duration.get_or_create(&labels).clone(),
            ttft: metrics.ttft.get_or_create(&labels).clone(),
            queue_wait: metrics.queue_wait.get_or_create(&labels).clone(),
            retries: metrics.retries.get_or_create(&labels).clone(),
            requests: metrics.requests.clone(),
            outcomes: Default::default(),
            families: AgentFamilies {
                picks: metrics.picks.clone(),
                requests: metrics.agent_requests.clone(),
                duration: metrics.agent_duration.clone(),
                ttft: metrics.agent_ttft.clone(),
            },
            agents: Mutex::default(),
        });
        metrics.track(&series);
        PoolMetrics(series)
    }

    /// Starts recording one request.
    pub fn start(&self) -> RequestRecord {
        self.start_at(Instant::now())
    }

    /// Starts recording one request that arrived at `started`.
    pub fn start_at(&self, started: Instant) -> RequestRecord {
        RequestRecord {
            series: self.clone(),
            agent: None,
            started,
            outcome: outcome_index("cancelled"),
        }
    }

    /// `agent`'s series, made when it is first picked.
    fn agent(&self, agent: &str) -> Option<Arc<AgentSeries>> {
        let s = &self.0;
        let mut agents = s.agents.lock().ok()?;
        if let Some(series) = agents.get(agent) {
            return Some(series.clone());
        }
        let labels = AgentLabels {
            pool: s.pool.clone(),
            agent: agent.to_owned(),
        };
        let series = Arc::new(AgentSeries::new(labels, s.strategy, &s.families));
        agents.insert(agent.to_owned(), series.clone());
        Some(series)
    }

    fn count(&self, outcome: usize) {
        let s = &self.0;
        s.outcomes.inc(outcome, |name| {
            let labels = OutcomeLabels {
                pool: s.pool.clone(),
                outcome: name,
            };
            s.requests.get_or_create(&labels).clone()
        });
    }
}

impl PoolSeries {
    /// Forgets `agent`'s series if they are `pool`'s.
    pub(super) fn forget_agent(&self, pool: &str, agent: &str) {
        if self.pool == pool
            && let Ok(mut agents) = self.agents.lock()
        {
            agents.remove(agent);
        }
    }
}

/// The index of `outcome` among the counted ones (unknown ones count as `upstream_error`).
fn outcome_index(outcome: &str) -> usize {
    OUTCOME_NAMES
        .iter()
        .position(|k| *k == outcome)
        .unwrap_or(OUTCOMES - 1)
}

/// One request's record; the outcome and duration are counted when it drops.
#[derive(Debug)]
pub struct RequestRecord {
    series: PoolMetrics,
    /// The agent that answered, once there is one.
    agent: Option<Arc<AgentSeries>>,
    started: Instant,
    outcome: usize,
}

impl RequestRecord {
    /// The request went to `agent` after `retries` and a wait of `queue_wait`; from now on
    /// it is counted on that agent too.
    pub fn forwarded(&mut self, agent: &str, retries: u32, queue_wait: Duration) {
        let s = &self.series.0;
        s.retries.inc_by(u64::from(retries));
        s.queue_wait.observe(queue_wait.as_secs_f64());
        self.agent = self.series.agent(agent);
        if let Some(a) = &self.agent {
            a.picks.inc();
        }
    }

    /// The first token arrived.
    pub fn first_token(&self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.series.0.ttft.observe(seconds);
        if let Some(a) = &self.agent {
            a.ttft.observe(seconds);
        }
    }

    /// Sets the outcome: `ok` or an error type (unknown ones count as `upstream_error`).
    pub fn outcome(&mut self, outcome: &str) {
        self.outcome = outcome_index(outcome);
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.series.0.duration.observe(seconds);
        self.series.count(self.outcome);
        if let Some(a) = &self.agent {
            a.duration.observe(seconds);
            a.count(self.outcome, &self.series.0.families.requests);
        }
    }
}
