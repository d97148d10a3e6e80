//! The retry policy of one request, as plain decisions: what a failed try means
//! (`Attempt`), and whether the request goes on to another agent (`Tries::learn`).
//!
//! Two kinds of failure are told apart. An agent that was lost (unreachable, or its
//! connection broke: it died) leaves its requests to the others: moving them adds no load,
//! so they are retried whatever the retry budget, and wait for a free agent until their
//! own deadline rather than the queue's. An agent that answered with an error is the kind
//! of failure that retries multiply: those retries are bounded per request
//! (`max_retries`, never twice on one agent) and across the pool (the retry budget), and
//! the agent's breaker opens.

use std::time::Duration;

use inferpool_protocol::errors::ErrorType;
use tokio::time::Instant;

use super::retry::RetryBudget;
use super::view::Busy;

/// Why a request got no answer from the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No agent could take it before the deadline.
    #[error("every agent is busy; retry later")]
    Saturated,
    /// No agent is up.
    #[error("no agent of this pool is available")]
    Unavailable,
    /// The pool has no ready agent (scaled to zero, or every agent restarting), and none
    /// became ready in time, or too many requests wait for one already.
    #[error("the pool has no ready agent yet; it is scaling up, retry later")]
    Scaling,
    /// The agent refused it (kept as the agent said: status and type).
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's error type.
        kind: String,
        /// The agent's message.
        message: String,
    },
    /// The request ran past its timeout.
    #[error("the request timed out")]
    Timeout,
}

impl ForwardError {
    /// The stable error type.
    pub fn error_type(&self) -> &str {
        match self {
            Self::Saturated => ErrorType::PoolSaturated.name(),
            Self::Unavailable => ErrorType::NoHealthyAgent.name(),
            Self::Scaling => ErrorType::PoolScaling.name(),
            Self::Refused { kind, .. } => kind,
            Self::Timeout => ErrorType::Timeout.name(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Saturated => ErrorType::PoolSaturated.status(),
            Self::Unavailable => ErrorType::NoHealthyAgent.status(),
            Self::Scaling => ErrorType::PoolScaling.status(),
            Self::Refused { status, .. } => *status,
            Self::Timeout => ErrorType::Timeout.status(),
        }
    }
}

/// Why one try failed.
#[derive(Debug)]
pub enum Attempt {
    /// The agent is healthy but turned it away (full queue, draining): another may take it.
    Busy(Busy, ForwardError),
    /// The agent is gone (unreachable, or its connection broke): another takes it.
    Lost(ForwardError),
    /// The agent failed: try another, within the request's retries and the budget.
    Retryable(ForwardError),
    /// The request itself was refused: answer so.
    Fatal(ForwardError),
}

/// How one pool forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Most retries of one request after agents answered errors.
    pub max_retries: u32,
    /// Longest a request waits for a free agent (before it was taken by one).
    pub queue_wait: Duration,
}

/// What one agent answered, and how it got there.
#[derive(Debug)]
pub struct Tried<T> {
    /// The answer.
    pub value: T,
    /// Agents tried before.
    pub retries: u32,
    /// Time spent waiting for a free agent.
    pub queue_wait: Duration,
}

/// Most times one request is turned away by busy agents. Each refusal keeps its agent out
/// until the agent reports again, so this is reached only when reports keep contradicting
/// refusals.
const TURNED_AWAY_LIMIT: u32 = 8;

/// Most agents lost under one request before it fails: agents die and are replaced, and
/// a request moves off each one that dies under it, but one that every agent it reaches
/// dies of is not sent on to kill more.
const LOST_LIMIT: u32 = 3;

/// What one request went through so far.
#[derive(Debug, Default)]
pub struct Tries {
    /// Agents that answered it with an error (never tried again).
    pub failed: Vec<String>,
    /// Agents lost under it.
    lost: u32,
    /// Busy agents' refusals.
    turned_away: u32,
    last_error: Option<ForwardError>,
    queue_wait: Duration,
    /// When its wait in the queue ends (read from the clock only once it waits: most
    /// requests find an agent at once).
    queue_until: Option<Instant>,
}

impl Tries {
    /// Until when a request that found no free agent at `now` may wait: the queue's wait,
    /// or once an agent took it and was lost, its own `deadline` (it is the pool's to
    /// finish).
    pub fn wait_until(
        &mut self,
        now: Instant,
        settings: ForwardSettings,
        deadline: Instant,
    ) -> Instant {
        let queue_until = *self.queue_until.get_or_insert(now + settings.queue_wait);
        if self.lost > 0 { deadline } else { queue_until }
    }

    /// Counts time spent waiting for a free agent.
    pub fn waited(&mut self, wait: Duration) {
        self.queue_wait += wait;
    }

    /// The error to answer with when no agent can be found: the last agent's, if any.
    pub fn no_agent(&mut self, e: ForwardError) -> ForwardError {
        self.last_error.take().unwrap_or(e)
    }

    /// The request's answer and how it got there.
    pub fn done<T>(self, value: T) -> Tried<T> {
        let tried = self.failed.len() as u64 + u64::from(self.lost + self.turned_away);
        Tried {
            value,
            retries: u32::try_from(tried).unwrap_or(u32::MAX),
            queue_wait: self.queue_wait,
        }
    }

    /// Learns from a failed try on agent `id`: the error to answer with now, or `Ok` to try
    /// again. A busy agent is reported to `turned_away` (the pool passes it over until its
    /// next report).
    pub fn learn(
        &mut self,
        budget: &RetryBudget,
        settings: ForwardSettings,
        id: String,
        failed: Attempt,
        turned_away: impl FnOnce(&str, Busy),
    ) -> Result<(), ForwardError> {
        let error = match failed {
            Attempt::Fatal(e) => return Err(e),
            // Neither the agent's failure nor load that a retry adds: no budget is spent.
            Attempt::Busy(busy, e) => {
                turned_away(&id, busy);
                self.turned_away += 1;
                within(self.turned_away <= TURNED_AWAY_LIMIT, e)?
            }
            // Out of rotation until it reports again (see `Outcome::Lost`).
            Attempt::Lost(e) => {
                self.lost += 1;
                within(self.lost <= LOST_LIMIT, e)?
            }
            Attempt::Retryable(e) => {
                self.failed.push(id);
                let retries = self.failed.len() as u64;
                let allowed = retries <= u64::from(settings.max_retries) && budget.try_withdraw();
                within(allowed, e)?
            }
        };
        self.last_error = Some(error);
        Ok(())
    }
}

/// `e` to try again with while `allowed`, else to answer with.
fn within(allowed: bool, e: ForwardError) -> Result<ForwardError, ForwardError> {
    if allowed { Ok(e) } else { Err(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ForwardSettings = ForwardSettings {
        max_retries: 2,
        queue_wait: Duration::from_secs(1),
    };

    fn learn(tries: &mut Tries, budget: &RetryBudget, id: &str, failed: Attempt) -> bool {
        tries
            .learn(budget, SETTINGS, id.into(), failed, |_, _| {})
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn lost_agents_spend_no_budget_and_errors_stop_at_max_retries() {
        let budget = RetryBudget::new(0);
        while budget.try_withdraw() {}
        let mut tries = Tries::default();
        for _ in 0..LOST_LIMIT {
            assert!(learn(
                &mut tries,
                &budget,
                "a",
                Attempt::Lost(ForwardError::Unavailable)
            ));
        }
        assert!(!learn(
            &mut tries,
            &budget,
            "a",
            Attempt::Lost(ForwardError::Unavailable)
        ));
        let mut tries = Tries::default();
        let failed = Attempt::Retryable(ForwardError::Unavailable);
        assert!(!learn(&mut tries, &budget, "a", failed), "no budget left");
        let budget = RetryBudget::new(100);
        let mut tries = Tries::default();
        for id in ["a", "b"] {
            assert!(learn(
                &mut tries,
                &budget,
                id,
                Attempt::Retryable(ForwardError::Unavailable)
            ));
        }
        assert!(!learn(
            &mut tries,
            &budget,
            "c",
            Attempt::Retryable(ForwardError::Unavailable)
        ));
        assert_eq!(tries.done(()).retries, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_request_waits_until_its_own_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut tries = Tries::default();
        assert_eq!(
            tries.wait_until(now, SETTINGS, deadline),
            now + SETTINGS.queue_wait
        );
        let budget = RetryBudget::new(0);
        learn(
            &mut tries,
            &budget,
            "a",
            Attempt::Lost(ForwardError::Unavailable),
        );
        assert_eq!(tries.wait_until(now, SETTINGS, deadline), deadline);
        assert_eq!(
            tries.no_agent(ForwardError::Saturated),
            ForwardError::Unavailable
        );
    }
}
