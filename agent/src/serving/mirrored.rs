//! A counter that mirrors a running total kept elsewhere (the engine's, the cache's).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// A counter that mirrors a running total kept elsewhere (the engine's, the cache's),
/// advanced by what the total gained since it was last seen.
#[derive(Debug, Default)]
pub(super) struct MirroredCounter {
    counter: Counter,
    seen: AtomicU64,
}

impl MirroredCounter {
    /// A mirror counting into `family`'s series of `labels`.
    pub(super) fn over<L>(family: &Family<L, Counter>, labels: &L) -> Self
    where
        L: Clone + std::hash::Hash + Eq,
    {
        Self {
            counter: family.get_or_create(labels).clone(),
            seen: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, total: u64) {
        let seen = self.seen.swap(total, Ordering::Relaxed);
        self.counter.inc_by(total.saturating_sub(seen));
    }

    pub(super) fn counter(&self) -> Counter {
        self.counter.clone()
    }
}
