//! The retry budget: every request deposits `percent / 100` of a retry, every retry
//! withdraws one, and the balance is capped, so that retries stay a bounded fraction of
//! traffic and cannot multiply load during an outage.

use std::sync::Mutex;

/// One retry, in hundredths (integer arithmetic: no rounding drift).
const RETRY: u32 = 100;
/// Most retries saved up for a burst of failures.
const CAP: u32 = 10 * RETRY;

/// A pool's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    balance: Mutex<u32>,
}

impl RetryBudget {
    /// Retries allowed as `percent` of requests; starts with a small reserve.
    pub fn new(percent: u32) -> Self {
        Self {
            percent: percent.min(100),
            balance: Mutex::new(RETRY),
        }
    }

    /// A request arrived.
    pub fn deposit(&self) {
        if let Ok(mut b) = self.balance.lock() {
            *b = (*b + self.percent).min(CAP);
        }
    }

    /// Takes one retry if the budget allows.
    pub fn try_withdraw(&self) -> bool {
        let Ok(mut b) = self.balance.lock() else {
            return false;
        };
        if *b >= RETRY {
            *b -= RETRY;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_bounded_share_of_requests() {
        let budget = RetryBudget::new(20);
        assert!(budget.try_withdraw(), "a small reserve to start with");
        assert!(!budget.try_withdraw());
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.try_withdraw() && budget.try_withdraw());
        assert!(
            !budget.try_withdraw(),
            "ten requests buy two retries at 20 %"
        );
        for _ in 0..1000 {
            budget.deposit();
        }
        let retries = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(retries, 10, "the balance is capped");
    }
}
