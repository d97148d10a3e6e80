//! The pause between retries of the controller's watches after an error. kube-runtime
//! paces every trigger watch of a controller (the pools and each owned kind, seven here)
//! with one backoff over their merged stream, so the errors of an API server outage
//! across all of them stepped client-go's default (0.8 s doubling to 30 s) up to pauses of
//! 25 s after the server was back (bench/faults: changes landed 41 s after a restart).
//! Worse, each watch's "too old resource version" after the restart (a relist, not a
//! failure) pauses them all once more, one after another: capped at 4 s that still took
//! 21 s. Capped at 1 s, an outage costs each watch about one request a second, and the
//! controller catches up within seconds of the server's return.

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};

/// The first pause.
const FIRST: Duration = Duration::from_millis(250);
/// The longest pause.
const MOST: Duration = Duration::from_secs(1);
/// Quiet time after which the pauses start again from `FIRST`.
const RESET_AFTER: Duration = Duration::from_secs(30);

/// Doubling pauses from `FIRST` up to `MOST`.
#[derive(Debug, Clone)]
pub struct CappedBackoff {
    next: Duration,
}

impl Default for CappedBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let pause = self.next;
        self.next = (self.next * 2).min(MOST);
        Some(pause)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// The controller's watch backoff.
pub fn watch_backoff() -> ResetTimerBackoff<CappedBackoff> {
    ResetTimerBackoff::new(CappedBackoff::default(), RESET_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_start_over_on_reset() {
        let mut b = CappedBackoff::default();
        let pauses: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}
