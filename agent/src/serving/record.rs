//! One request's metrics: time to first token, tokens, duration and outcome, recorded
//! when it ends however it ends (a client that went away counts as `cancelled`).

use std::sync::Arc;
use std::time::Instant;

use super::Agent;
use super::metrics::EndpointLabels;

/// Records one request's metrics; dropping it records the outcome.
#[derive(Debug)]
pub struct Recorder {
    agent: Arc<Agent>,
    endpoint: &'static str,
    started: Instant,
    first_token: bool,
    /// Replayed from the response cache: its tokens were not generated.
    replayed: bool,
    outcome: &'static str,
}

impl Recorder {
    /// Starts timing a request on `endpoint`.
    pub fn start(agent: Arc<Agent>, endpoint: &'static str) -> Self {
        Self {
            agent,
            endpoint,
            started: Instant::now(),
            first_token: false,
            replayed: false,
            outcome: "cancelled",
        }
    }

    /// Marks the answer as replayed from the response cache: its tokens still stop the
    /// time-to-first-token clock (the client waited that long) but are not counted as
    /// generated, which the engine did not do.
    pub fn replayed(&mut self) {
        self.replayed = true;
    }

    /// Counts generated tokens (the first one stops the time-to-first-token clock).
    pub fn tokens(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if !self.first_token {
            self.first_token = true;
            let ttft = self.started.elapsed().as_secs_f64();
            self.labels(|l| self.agent.metrics.ttft.get_or_create(l).observe(ttft));
        }
        if !self.replayed {
            self.agent.metrics.generation_tokens.inc_by(n as u64);
        }
    }

    /// Sets the outcome: `ok` or an error type.
    pub fn outcome(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }

    fn labels(&self, f: impl FnOnce(&EndpointLabels)) {
        f(&EndpointLabels {
            endpoint: self.endpoint,
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.labels(|l| {
            self.agent
                .metrics
                .duration
                .get_or_create(l)
                .observe(seconds)
        });
        self.agent
            .metrics
            .request_ended(self.endpoint, self.outcome);
    }
}
