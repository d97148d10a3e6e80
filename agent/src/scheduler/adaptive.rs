//! The `adaptive` strategy's controller: it moves the admitted batch size and the batching
//! wait online, from the time per output token and the time to first token the engine
//! measures, towards the pool's targets. A bigger batch gives more tokens per second in all
//! but a longer step (every running sequence waits for it); a longer wait fills batches but
//! delays first tokens. So:
//! - time per token over its target: the batch limit halves;
//!   comfortably under (below `HEADROOM` of it): it rises by one (additive increase,
//!   multiplicative decrease, as TCP's congestion window does);
//! - time to first token over its target: the wait halves; well under (below half of it):
//!   it grows by an eighth of `maxWaitMilliseconds`, up to it.
//!
//! A step is only a sample for the batch limit when it decoded alone (a prompt chunk in it
//! says nothing about the batch size) and no more sequences ran than the limit allows
//! (after a decrease the running batch drains first); each setting moves at most once per
//! window of `SAMPLES` samples, on the window's median, so one slow step does not move it.

use std::time::Duration;

/// Latency targets; `None` leaves that dimension alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SloTargets {
    /// Time to first token.
    pub ttft: Option<Duration>,
    /// Time per output token (one decoding step).
    pub time_per_token: Option<Duration>,
}

/// Fraction of the target under which the batch limit may grow again.
const HEADROOM: f64 = 0.85;
/// Samples per window: a setting moves at most once a window.
const SAMPLES: usize = 8;

/// The samples of the current window, and the median of the last full one.
#[derive(Debug, Clone, Default)]
struct Window {
    samples: Vec<Duration>,
    last: Option<Duration>,
}

impl Window {
    fn add(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// The window's median once `SAMPLES` came in (a median, so that one slow step, a
    /// page fault or a neighbour's burst, does not move the controller); starts the next.
    fn take(&mut self) -> Option<Duration> {
        if self.samples.len() < SAMPLES {
            return None;
        }
        self.samples.sort();
        let median = self.samples[self.samples.len() / 2];
        self.samples.clear();
        self.last = Some(median);
        Some(median)
    }
}

/// The controller's settings and measurements.
#[derive(Debug, Clone)]
pub struct SloController {
    targets: SloTargets,
    max_batch: usize,
    max_wait: Duration,
    limit: usize,
    wait: Duration,
    per_token: Window,
    first_token: Window,
}

impl SloController {
    /// Starts at the full batch and the whole wait.
    pub fn new(targets: SloTargets, max_batch: usize, max_wait: Duration) -> Self {
        Self {
            targets,
            max_batch: max_batch.max(1),
            max_wait,
            limit: max_batch.max(1),
            wait: max_wait,
            per_token: Window::default(),
            first_token: Window::default(),
        }
    }

    /// Sequences that may run together now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How long the gate waits for a batch to fill now.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The measured time per token (the last window's median), once there is one.
    pub fn time_per_token(&self) -> Option<Duration> {
        self.per_token.last
    }

    /// A step that gave a token to `decoding` sequences took `took`.
    pub fn step(&mut self, decoding: usize, took: Duration) {
        let Some(target) = self.targets.time_per_token else {
            return;
        };
        if decoding == 0 || decoding > self.limit {
            return;
        }
        self.per_token.add(took);
        let Some(measured) = self.per_token.take() else {
            return;
        };
        if measured > target {
            self.limit = (self.limit / 2).max(1);
        } else if measured < target.mul_f64(HEADROOM) && decoding == self.limit {
            // Only a full batch shows what one more sequence would cost.
            self.limit = (self.limit + 1).min(self.max_batch);
        }
    }

    /// A request got its first token `ttft` after it arrived.
    pub fn first_token(&mut self, ttft: Duration) {
        let Some(target) = self.targets.ttft else {
            return;
        };
        self.first_token.add(ttft);
        let Some(measured) = self.first_token.take() else {
            return;
        };
        if measured > target {
            self.wait /= 2;
        } else if measured < target / 2 {
            let step = (self.max_wait / 8).max(Duration::from_millis(1));
            self.wait = (self.wait + step).min(self.max_wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A machine whose step takes 10 ms plus 5 ms per sequence.
    fn step_time(decoding: usize) -> Duration {
        MS * (10 + 5 * decoding as u32)
    }

    fn tpot_only(target_ms: u32, max_batch: usize) -> SloController {
        let targets = SloTargets {
            time_per_token: Some(MS * target_ms),
            ttft: None,
        };
        SloController::new(targets, max_batch, MS * 50)
    }

    /// Runs `steps` steps with `demand` sequences wanting to run.
    fn run(c: &mut SloController, demand: usize, steps: usize) -> Vec<usize> {
        (0..steps)
            .map(|_| {
                let decoding = demand.min(c.limit());
                c.step(decoding, step_time(decoding));
                c.limit()
            })
            .collect()
    }

    #[test]
    fn the_batch_shrinks_until_a_step_meets_the_target_and_stays_there() {
        // 16 sequences take 90 ms a step; the target of 40 ms allows at most 6.
        let mut c = tpot_only(40, 16);
        let limits = run(&mut c, 16, 400);
        let settled = &limits[200..];
        assert!(settled.iter().all(|&l| (5..=6).contains(&l)), "{settled:?}");
        assert!(c.time_per_token().is_some_and(|t| t <= MS * 42));
    }

    #[test]
    fn a_batch_that_meets_the_target_grows_back_to_the_full_size() {
        let mut roomy = tpot_only(200, 16);
        roomy.limit = 2;
        let limits = run(&mut roomy, 16, 400);
        assert_eq!(limits.last(), Some(&16), "{limits:?}");
    }

    #[test]
    fn without_a_target_nothing_moves() {
        let mut c = SloController::new(SloTargets::default(), 8, MS * 50);
        run(&mut c, 8, 100);
        c.first_token(MS * 10_000);
        assert_eq!((c.limit(), c.wait()), (8, MS * 50));
    }

    #[test]
    fn the_wait_shrinks_when_first_tokens_come_late_and_grows_back_when_early() {
        let targets = SloTargets {
            ttft: Some(MS * 200),
            time_per_token: None,
        };
        let mut c = SloController::new(targets, 8, MS * 80);
        for _ in 0..8 * 6 {
            c.first_token(MS * 400);
        }
        assert!(c.wait() <= MS * 2, "{:?}", c.wait());
        for _ in 0..8 * 12 {
            c.first_token(MS * 20);
        }
        assert_eq!(c.wait(), MS * 80);
    }

    #[test]
    fn one_slow_step_in_a_window_does_not_move_the_limit() {
        let mut c = tpot_only(40, 8);
        // 5 sequences take 35 ms: within the target and its headroom, so nothing moves...
        c.limit = 5;
        c.step(5, MS * 500);
        for _ in 1..SAMPLES {
            c.step(5, step_time(5));
        }
        // ...unless the window were judged on its slow step.
        assert_eq!(c.limit(), 5);
        assert_eq!(c.time_per_token(), Some(step_time(5)));
    }
}
