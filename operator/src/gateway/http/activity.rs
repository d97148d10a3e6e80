//! What one connection is doing, for its idle timeout: the requests in flight on it (each
//! held by a guard until its answer is written or dropped) and since when none has been.
//! A connection is idle only with nothing in flight, however long an answer streams.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's requests in flight.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Clone, Copy)]
struct State {
    in_flight: u32,
    idle_since: Instant,
    served: bool,
}

/// One request in flight on a connection, until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.idle_since = Instant::now();
            }
        }
        self.0.changed.notify_waiters();
    }
}

impl Activity {
    /// A new connection: idle from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                in_flight: 0,
                idle_since: Instant::now(),
                served: false,
            }),
            changed: Notify::new(),
        })
    }

    /// A request started.
    pub fn start(self: &Arc<Self>) -> Busy {
        if let Ok(mut s) = self.state.lock() {
            s.in_flight += 1;
            s.served = true;
        }
        self.changed.notify_waiters();
        Busy(self.clone())
    }

    /// Returns once the connection has had nothing in flight for `first` (before its first
    /// request: a client that never sends one) or `between` (after it).
    pub async fn idle_for(&self, first: Duration, between: Duration) {
        loop {
            let changed = self.changed.notified();
            let Some(state) = self.state.lock().ok().map(|s| *s) else {
                return;
            };
            if state.in_flight > 0 {
                changed.await;
                continue;
            }
            let limit = if state.served { between } else { first };
            let due = state.idle_since + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_with_nothing_in_flight_for_the_limit() {
        let activity = Activity::new();
        let first = Duration::from_secs(2);
        let between = Duration::from_secs(10);
        let started = Instant::now();
        activity.idle_for(first, between).await;
        assert_eq!(started.elapsed(), first, "no request came");
        let busy = activity.start();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(first, between).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "a request is in flight");
        drop(busy);
        let ended = Instant::now();
        waiting.await.unwrap();
        assert_eq!(ended.elapsed(), between);
    }
}
