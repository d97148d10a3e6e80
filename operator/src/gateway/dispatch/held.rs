//! Requests held while a pool has no ready agent (scaled to zero, or every agent
//! restarting): counted per pool against its `maxHeldRequests`, and announced on the
//! gateway's demand signal, which whoever scales the pool follows (the gateway's demand
//! publisher in a cluster, the local scaler on a laptop). The count is a guard's: a
//! request that gets an agent, fails or leaves gives its place back however it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

/// One pool's held requests.
#[derive(Debug)]
pub struct Holding {
    count: AtomicU32,
    max: u32,
    demand: Arc<Notify>,
}

/// Most requests held per pool when its spec says nothing (the API's default).
pub const DEFAULT_MAX_HELD: u32 = 256;

impl Default for Holding {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HELD, Arc::default())
    }
}

impl Holding {
    /// Holds at most `max` requests, telling `demand` of every change.
    pub fn new(max: u32, demand: Arc<Notify>) -> Self {
        Self {
            count: AtomicU32::new(0),
            max,
            demand,
        }
    }

    /// Requests held now.
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Tells the demand's followers that the pool's waiting requests changed.
    pub fn announce(&self) {
        self.demand.notify_one();
    }

    /// A place among the held requests, unless `max` are held already.
    pub fn hold(&self) -> Option<Held<'_>> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.demand.notify_one();
        Some(Held { holding: self })
    }
}

/// One held request's place, given back when dropped.
#[derive(Debug)]
pub struct Held<'a> {
    holding: &'a Holding,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.holding.count.fetch_sub(1, Ordering::AcqRel);
        self.holding.demand.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_its_limit_and_gives_places_back() {
        let demand = Arc::new(Notify::new());
        let holding = Holding::new(2, demand);
        let first = holding.hold().expect("first place");
        let second = holding.hold().expect("second place");
        assert!(
            holding.hold().is_none(),
            "a third request is past the limit"
        );
        assert_eq!(holding.count(), 2);
        drop(first);
        assert_eq!(holding.count(), 1);
        assert!(holding.hold().is_some(), "a freed place is taken again");
        drop(second);
        assert_eq!(holding.count(), 0);
        assert!(
            Holding::new(0, Arc::default()).hold().is_none(),
            "0 holds none"
        );
    }

    #[tokio::test]
    async fn every_change_is_announced() {
        let demand = Arc::new(Notify::new());
        let holding = Holding::new(4, demand.clone());
        let held = holding.hold();
        // The permit waits for the follower even if it was not listening yet.
        tokio::time::timeout(std::time::Duration::from_secs(5), demand.notified())
            .await
            .expect("hold announced");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), demand.notified())
            .await
            .expect("release announced");
    }
}
