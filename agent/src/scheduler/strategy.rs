//! Batching strategies: when waiting requests may join the running batch. `continuous`
//! admits at every step; the others hold requests back to form fuller batches, which trades
//! latency for fewer, larger steps:
//! - `static`: a new batch starts only once the previous one has finished entirely, and
//!   only when it is full or its oldest request waited `max_wait`;
//! - `dynamic`: requests join as slots free up, but only when they fill every free slot or
//!   the oldest waited `max_wait`;
//! - `adaptive`: dynamic over a batch size and a wait that `adaptive::SloController` moves
//!   online towards the pool's latency targets; the wait is further scaled by the share of
//!   free slots, so that it shrinks as the batch gets busy.

use std::time::Duration;

/// When a batch runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Only full batches, one at a time (or at the wait limit).
    Static,
    /// When the free slots fill, or at the wait limit.
    Dynamic,
    /// Dynamic, with a wait that shrinks as the batch gets busy.
    Adaptive,
    /// Join and leave at every step.
    #[default]
    Continuous,
}

/// What the gate looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchState {
    /// Sequences running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
    /// Most sequences per batch.
    pub max_batch_size: usize,
    /// How long the oldest waiting request has waited.
    pub oldest_wait: Duration,
}

/// Whether waiting requests may join now; otherwise, how long until they may (at the
/// latest; an arrival may open the gate sooner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Admit.
    Open,
    /// Hold, re-checking after at most this long.
    Hold(Duration),
    /// Hold until the running batch finishes.
    Closed,
}

impl Strategy {
    /// The gate for `s` with the wait limit `max_wait`.
    pub fn gate(self, s: BatchState, max_wait: Duration) -> Gate {
        let free = s.max_batch_size.saturating_sub(s.running);
        let wait = match self {
            Self::Continuous => return Gate::Open,
            Self::Static if s.running > 0 => return Gate::Closed,
            Self::Adaptive => max_wait.mul_f64(free as f64 / s.max_batch_size.max(1) as f64),
            Self::Static | Self::Dynamic => max_wait,
        };
        if s.waiting >= free || s.oldest_wait >= wait {
            Gate::Open
        } else {
            Gate::Hold(wait - s.oldest_wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(100);

    fn state(running: usize, waiting: usize, waited_ms: u64) -> BatchState {
        BatchState {
            running,
            waiting,
            max_batch_size: 4,
            oldest_wait: Duration::from_millis(waited_ms),
        }
    }

    #[test]
    fn continuous_always_admits() {
        assert_eq!(Strategy::Continuous.gate(state(3, 1, 0), WAIT), Gate::Open);
    }

    #[test]
    fn static_runs_one_full_batch_at_a_time() {
        let s = Strategy::Static;
        assert_eq!(
            s.gate(state(0, 1, 30), WAIT),
            Gate::Hold(Duration::from_millis(70))
        );
        assert_eq!(s.gate(state(0, 4, 0), WAIT), Gate::Open);
        assert_eq!(s.gate(state(0, 1, 100), WAIT), Gate::Open);
        assert_eq!(s.gate(state(1, 8, 500), WAIT), Gate::Closed);
    }

    #[test]
    fn dynamic_fills_free_slots_or_waits_its_limit() {
        let s = Strategy::Dynamic;
        assert_eq!(
            s.gate(state(2, 2, 0), WAIT),
            Gate::Open,
            "fills the two free slots"
        );
        assert_eq!(
            s.gate(state(2, 1, 40), WAIT),
            Gate::Hold(Duration::from_millis(60))
        );
        assert_eq!(s.gate(state(2, 1, 100), WAIT), Gate::Open);
    }

    #[test]
    fn adaptive_waits_less_as_the_batch_gets_busy() {
        let s = Strategy::Adaptive;
        assert_eq!(s.gate(state(0, 1, 0), WAIT), Gate::Hold(WAIT));
        assert_eq!(s.gate(state(2, 1, 0), WAIT), Gate::Hold(WAIT / 2));
        assert_eq!(s.gate(state(3, 1, 25), WAIT), Gate::Open);
    }
}
