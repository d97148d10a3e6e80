//! The retry budget (Finagle's design): every request deposits `percent / 100` of a
//! retry, a floor of `MIN_PER_SECOND` retries accrues with time so that a quiet pool can
//! still retry when an agent dies, and the balance is capped, so that retries stay a
//! bounded share of traffic and cannot multiply load during an outage.

use std::sync::Mutex;

use tokio::time::Instant;

/// One retry, in hundredths (integer arithmetic: no rounding drift).
const RETRY: u64 = 100;
/// Retries that accrue per second whatever the traffic.
const MIN_PER_SECOND: u64 = 10;
/// Most retries saved up for a burst of failures (an agent dying with a full queue).
const CAP: u64 = 20 * RETRY;

/// A pool's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u64,
    state: Mutex<(u64, Instant)>,
}

impl RetryBudget {
    /// Retries allowed as `percent` of requests, plus the time-based floor; starts full.
    pub fn new(percent: u32) -> Self {
        Self {
            percent: u64::from(percent.min(100)),
            state: Mutex::new((CAP, Instant::now())),
        }
    }

    /// A request arrived.
    pub fn deposit(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = (s.0 + self.percent).min(CAP);
        }
    }

    /// Takes one retry if the budget allows.
    pub fn try_withdraw(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let now = Instant::now();
        let accrued = now.duration_since(s.1).as_millis() as u64 * MIN_PER_SECOND * RETRY / 1000;
        if accrued > 0 {
            s.0 = (s.0 + accrued).min(CAP);
            s.1 = now;
        }
        if s.0 >= RETRY {
            s.0 -= RETRY;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_traffic_and_a_floor_over_time() {
        let budget = RetryBudget::new(20);
        let burst = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(
            burst, 20,
            "a full reserve for an agent dying with a full queue"
        );
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.try_withdraw() && budget.try_withdraw());
        assert!(
            !budget.try_withdraw(),
            "ten requests buy two retries at 20 %"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        let floor = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(floor, 5, "ten retries a second accrue whatever the traffic");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            (0..100).filter(|_| budget.try_withdraw()).count(),
            20,
            "capped"
        );
    }
}
