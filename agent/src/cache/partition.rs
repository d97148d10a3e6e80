//! One model's share of the response cache: a moka cache weighed in bytes, each entry
//! expiring at its own time (a snapshot's entries keep their remaining life), removals
//! counted by reason and told to the semantic index, and a shrink for memory pressure that
//! drops the least recently served entries first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::entry::{Entry, StoredEntry, now_ms};
use super::key::split_exact;
use super::semantic::SemanticIndex;

/// Entries removed, by reason.
#[derive(Debug, Default)]
pub struct Evictions {
    /// To stay within the capacity.
    pub capacity: AtomicU64,
    /// Their time was up.
    pub ttl: AtomicU64,
    /// Shrunk for memory pressure.
    pub pressure: AtomicU64,
    /// Replaced by a newer answer to the same request.
    pub invalidated: AtomicU64,
}

impl Evictions {
    fn count(&self, cause: RemovalCause) {
        let counter = match cause {
            RemovalCause::Size => &self.capacity,
            RemovalCause::Expired => &self.ttl,
            // The cache removes entries itself only to relieve memory pressure.
            RemovalCause::Explicit => &self.pressure,
            RemovalCause::Replaced => &self.invalidated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Each entry lives until its own `expires_ms`.
struct UntilExpiry;

impl Expiry<String, Arc<Entry>> for UntilExpiry {
    fn expire_after_create(&self, _: &String, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.remaining(now_ms()))
    }

    fn expire_after_update(
        &self,
        _: &String,
        e: &Arc<Entry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.remaining(now_ms()))
    }
}

/// Bookkeeping per entry beyond its key and payload.
const ENTRY_OVERHEAD: usize = 96;

/// One model's entries.
pub struct Partition {
    entries: Cache<String, Arc<Entry>>,
    evictions: Arc<Evictions>,
    semantic: Option<Arc<SemanticIndex>>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// An empty partition of `capacity_bytes`, filing embeddings in `semantic` when given.
    pub fn new(capacity_bytes: u64, semantic: Option<Arc<SemanticIndex>>) -> Self {
        let evictions = Arc::new(Evictions::default());
        let (counts, index) = (evictions.clone(), semantic.clone());
        let entries = Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|k: &String, e: &Arc<Entry>| {
                u32::try_from(k.len() + e.bytes() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(UntilExpiry)
            .eviction_listener(move |key: Arc<String>, entry: Arc<Entry>, cause| {
                counts.count(cause);
                if let (Some(index), Some((scope, _))) = (&index, split_exact(&key)) {
                    index.remove(scope, &key, entry.id);
                }
            })
            .build();
        Self {
            entries,
            evictions,
            semantic,
        }
    }

    /// The entry under `key`, if still good and no older than `max_age`.
    pub fn get(&self, key: &str, max_age: Option<Duration>) -> Option<Arc<Entry>> {
        let entry = self.entries.get(key)?;
        let now = now_ms();
        let fresh = entry.expires_ms > now && max_age.is_none_or(|a| entry.younger_than(a, now));
        fresh.then(|| {
            entry.touch(now);
            entry
        })
    }

    /// Keeps `entry` under `key`, filing its embedding for semantic matches; an expired
    /// entry is not kept (false).
    pub fn insert(&self, key: String, entry: Entry) -> bool {
        if entry.expires_ms <= now_ms() {
            return false;
        }
        // Filed before it enters the cache, so that its removal, however soon, unfiles it;
        // a replaced entry's removal leaves this one's filing alone (the ids differ).
        if let (Some(index), Some(vector), Some((scope, _))) =
            (&self.semantic, &entry.embedding, split_exact(&key))
        {
            index.insert(scope, key.as_str().into(), entry.id, vector);
        }
        self.entries.insert(key, Arc::new(entry));
        true
    }

    /// Drops the least recently served entries until `bytes` are freed (or none is left);
    /// returns the bytes freed.
    pub fn shrink(&self, bytes: u64) -> u64 {
        let mut by_age: Vec<(u64, Arc<String>, u64)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.last_used_ms(), k.clone(), weight(&k, &e)))
            .collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        let mut freed = 0;
        for (_, key, weight) in by_age {
            if freed >= bytes {
                break;
            }
            self.entries.invalidate(key.as_str());
            freed += weight;
        }
        self.entries.run_pending_tasks();
        freed
    }

    /// Every live entry, as a snapshot keeps it.
    pub fn stored(&self) -> Vec<StoredEntry> {
        let now = now_ms();
        self.entries
            .iter()
            .filter(|(_, e)| e.expires_ms > now)
            .map(|(k, e)| StoredEntry::of(&k, &e))
            .collect()
    }

    /// Entries and bytes held (after moka's pending maintenance, so they are current).
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    /// Removals so far, by reason.
    pub fn evictions(&self) -> &Evictions {
        &self.evictions
    }
}

fn weight(key: &str, entry: &Entry) -> u64 {
    (key.len() + entry.bytes() + ENTRY_OVERHEAD) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Payload;

    fn answer(text: &str) -> Payload {
        Payload::answer_of(text)
    }

    fn entry(text: &str, life: Duration) -> Entry {
        let now = now_ms();
        Entry::new(answer(text), now, now + life.as_millis() as u64)
    }

    #[test]
    fn the_byte_budget_evicts_and_counts_capacity() {
        let p = Partition::new(4096, None);
        for i in 0..200 {
            p.insert(
                format!("k{i}"),
                entry(&"x".repeat(100), Duration::from_secs(60)),
            );
        }
        let (entries, bytes) = p.size();
        assert!(
            bytes <= 4096 && entries > 0 && entries < 200,
            "{entries} {bytes}"
        );
        let evicted = p.evictions().capacity.load(Ordering::Relaxed);
        assert_eq!(evicted + entries, 200);
    }

    #[test]
    fn max_age_and_expiry_are_obeyed() {
        let p = Partition::new(1 << 20, None);
        let old = now_ms() - 10_000;
        p.insert("old".into(), Entry::new(answer("a"), old, old + 60_000));
        assert!(p.get("old", None).is_some());
        assert!(p.get("old", Some(Duration::from_secs(5))).is_none());
        assert!(p.get("old", Some(Duration::from_secs(20))).is_some());
        p.insert("gone".into(), Entry::new(answer("b"), old, old + 1));
        assert!(p.get("gone", None).is_none());
        assert_eq!(p.size().0, 1);
    }

    #[test]
    fn a_newer_answer_replaces_and_counts_as_invalidated() {
        let p = Partition::new(1 << 20, None);
        p.insert("k".into(), entry("first", Duration::from_secs(60)));
        p.insert("k".into(), entry("second", Duration::from_secs(60)));
        p.size();
        assert_eq!(
            p.get("k", None).map(|e| e.payload.clone()),
            Some(answer("second"))
        );
        assert_eq!(p.evictions().invalidated.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn shrinking_drops_the_least_recently_served_first() {
        let p = Partition::new(1 << 20, None);
        for i in 0..10 {
            let e = entry("answer", Duration::from_secs(60));
            e.touch(1_000 + i);
            p.insert(format!("k{i}"), e);
        }
        let per_entry = p.size().1 / 10;
        let freed = p.shrink(per_entry * 3);
        assert!(freed >= per_entry * 3);
        let left: Vec<bool> = (0..10)
            .map(|i| p.get(&format!("k{i}"), None).is_some())
            .collect();
        assert_eq!(
            left,
            [
                false, false, false, true, true, true, true, true, true, true
            ]
        );
        assert_eq!(p.evictions().pressure.load(Ordering::Relaxed), 3);
    }
}
