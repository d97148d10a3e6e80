//! A circuit breaker per agent: consecutive failures open it, an open circuit refuses
//! until its cool-down ends, then lets exactly one probe through (half-open); the probe's
//! success closes it, its failure opens it again.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One agent's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a request may go to the agent now (in half-open, only the one probe).
    pub fn try_acquire(&mut self) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing } => {
                self.state = State::HalfOpen { probing: true };
                !probing
            }
        }
    }

    /// Whether the agent would be offered traffic now (without taking the probe).
    pub fn is_available(&self) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } => Instant::now() >= until,
            State::HalfOpen { probing } => !probing,
        }
    }

    /// A request to the agent succeeded.
    pub fn record_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A request's first answer came: a half-open probe has shown the agent serves again,
    /// so the circuit closes without waiting for the whole stream. A closed circuit keeps
    /// its failure count: a stream that fails after its first token still counts, and
    /// resetting here would keep an agent that fails every stream midway from ever
    /// opening.
    pub fn record_first_answer(&mut self) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::Closed { failures: 0 };
        }
    }

    /// A request to the agent failed (it could not be reached or answered with a server
    /// error, not a client error).
    pub fn record_failure(&mut self) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: Instant::now() + self.cooldown,
            },
        };
    }

    /// A request that went to the agent ended without a verdict on it (its client left):
    /// nothing is counted, and a probe it was lets the next request probe instead.
    pub fn record_cancelled(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// Forgets every failure (the agent came back as a new process: what its predecessor
    /// did says nothing about it).
    pub fn reset(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// `closed`, `open` or `half_open`, for metrics.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn streams_that_fail_after_their_first_token_still_open_the_circuit() {
        let mut b = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            b.record_first_answer();
            b.record_failure();
        }
        assert_eq!(b.state_name(), "open");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire(), "the probe goes through");
        b.record_first_answer();
        assert_eq!(b.state_name(), "closed", "a probe's first token closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let mut b = Breaker::new(3, Duration::from_secs(10));
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        b.record_failure();
        assert!(b.try_acquire(), "a success reset the count");
        b.record_failure();
        assert_eq!(b.state_name(), "open");
        assert!(!b.try_acquire() && !b.is_available());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.is_available());
        assert!(b.try_acquire(), "the probe goes through");
        assert_eq!(b.state_name(), "half_open");
        assert!(!b.try_acquire(), "only one probe at a time");
        b.record_failure();
        assert_eq!(b.state_name(), "open");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire());
        b.record_success();
        assert_eq!(b.state_name(), "closed");
        assert!(b.try_acquire() && b.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_another_probe_and_a_reset_closes() {
        let mut b = Breaker::new(1, Duration::from_secs(10));
        b.record_failure();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire(), "the probe goes through");
        b.record_cancelled();
        assert!(
            b.is_available(),
            "its client left: the agent is not stuck probing"
        );
        assert!(b.try_acquire() && !b.try_acquire(), "one probe again");
        b.record_failure();
        assert!(!b.is_available());
        b.reset();
        assert_eq!(b.state_name(), "closed");
        b.record_cancelled();
        assert_eq!(
            b.state_name(),
            "closed",
            "a cancellation counts for nothing"
        );
    }
}
