//! The cache as the agent uses it: a partition per served model, lookups (exact, then
//! semantic) counted by kind, answers stored as requests allow, the memory-pressure shrink
//! and the snapshot.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::directives::CacheDirectives;
use super::entry::{Entry, Payload, StoredEntry, now_ms};
use super::key::{PromptKey, split_exact};
use super::partition::{Evictions, Partition};
use super::pressure::{MemoryReading, Watermarks};
use super::semantic::SemanticIndex;
use super::snapshot::{self, SnapshotError};
use super::verify::compatible;

/// Semantic matching's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticSettings {
    /// Least cosine similarity of a candidate.
    pub threshold: f32,
    /// Dimension of the embedding model's vectors.
    pub dim: usize,
}

/// How big, how fresh, and what else the cache does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheSettings {
    /// Most bytes of keys and answers held, over all partitions.
    pub capacity_bytes: u64,
    /// How long an entry stays valid.
    pub ttl: Duration,
    /// Semantic matching, when on.
    pub semantic: Option<SemanticSettings>,
    /// When to shrink for memory pressure.
    pub watermarks: Watermarks,
}

/// A served model, and the revision of its weights and template: a snapshot's entries of
/// another revision are not loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// The name clients send.
    pub name: String,
    /// Changes whenever its answers may change.
    pub revision: String,
}

/// A partition to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Whose.
    pub model: ModelId,
    /// Whether its entries may answer semantically.
    pub semantic: bool,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Found {
    /// The same request.
    Exact(Arc<Entry>),
    /// A request close in meaning, with its similarity.
    Semantic(Arc<Entry>, f32),
}

impl Found {
    /// The entry found, whichever way.
    pub fn entry(&self) -> &Arc<Entry> {
        match self {
            Self::Exact(entry) | Self::Semantic(entry, _) => entry,
        }
    }
}

/// Counts for load reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Lookups answered by an exact match.
    pub exact_hits: u64,
    /// Lookups answered by a semantic match.
    pub semantic_hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Embedding inputs found.
    pub embedding_hits: u64,
    /// Embedding inputs not found.
    pub embedding_misses: u64,
    /// Entries removed to stay within the capacity.
    pub evicted_capacity: u64,
    /// Entries expired.
    pub evicted_ttl: u64,
    /// Entries dropped for memory pressure.
    pub evicted_pressure: u64,
    /// Entries replaced by a newer answer.
    pub evicted_invalidated: u64,
}

impl CacheStats {
    /// Hits of both kinds.
    pub fn hits(&self) -> u64 {
        self.exact_hits + self.semantic_hits
    }

    /// Hits over lookups (0 before the first).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits() + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits() as f64 / lookups as f64
        }
    }
}

/// A partition with whose it is.
#[derive(Debug)]
struct Owned {
    model: ModelId,
    partition: Partition,
    semantic: Option<Arc<SemanticIndex>>,
}

/// A snapshot file's contents.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    partitions: Vec<(ModelId, Vec<StoredEntry>)>,
}

impl SnapshotFile {
    fn entries(&self) -> usize {
        self.partitions.iter().map(|(_, e)| e.len()).sum()
    }
}

/// The agent's response cache.
#[derive(Debug)]
pub struct ResponseCache {
    settings: CacheSettings,
    partitions: Vec<Owned>,
    exact_hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    embedding_hits: AtomicU64,
    embedding_misses: AtomicU64,
    /// One snapshot at a time: the periodic one and the one at drain never interleave, so
    /// the last written is the last taken.
    saving: std::sync::Mutex<()>,
}

/// Semantic candidates checked per lookup: the best few above the threshold.
const CANDIDATES: usize = 4;

impl ResponseCache {
    /// An empty cache with a partition per model in `specs`, sharing the capacity evenly.
    pub fn new(settings: CacheSettings, specs: Vec<PartitionSpec>) -> Self {
        let share = settings.capacity_bytes / specs.len().max(1) as u64;
        let partitions = specs
            .into_iter()
            .map(|spec| {
                let semantic = settings
                    .semantic
                    .filter(|_| spec.semantic)
                    .map(|s| Arc::new(SemanticIndex::new(s.dim)));
                Owned {
                    model: spec.model,
                    partition: Partition::new(share, semantic.clone()),
                    semantic,
                }
            })
            .collect();
        Self {
            settings,
            partitions,
            exact_hits: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            embedding_hits: AtomicU64::new(0),
            embedding_misses: AtomicU64::new(0),
            saving: std::sync::Mutex::new(()),
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    fn owned(&self, model: &str) -> Option<&Owned> {
        self.partitions.iter().find(|p| p.model.name == model)
    }

    /// Whether `model`'s requests may be answered semantically.
    pub fn semantic_for(&self, model: &str) -> bool {
        self.owned(model).is_some_and(|p| p.semantic.is_some())
    }

    /// The entry filed under exactly `key` for `model`, as `directives` allow.
    pub fn exact(&self, model: &str, key: &str, directives: CacheDirectives) -> Option<Found> {
        if !directives.may_look_up() {
            return None;
        }
        let entry = self.owned(model)?.partition.get(key, directives.max_age)?;
        Some(Found::Exact(entry))
    }

    /// The best entry of `key`'s scope whose turn is within the threshold of `query` (the
    /// embedding of `key`'s turn) and passes the lexical check.
    pub fn semantic(
        &self,
        model: &str,
        key: &PromptKey,
        query: &[f32],
        directives: CacheDirectives,
    ) -> Option<Found> {
        let owned = self.owned(model)?;
        let (index, settings) = (owned.semantic.as_ref()?, self.settings.semantic?);
        if !(directives.may_look_up() && key.semantic()) {
            return None;
        }
        let candidates = index.nearest(key.scope(), query, CANDIDATES, settings.threshold);
        candidates.into_iter().find_map(|c| {
            let (_, turn) = split_exact(&c.key)?;
            if !compatible(key.turn(), turn) {
                return None;
            }
            let entry = owned.partition.get(&c.key, directives.max_age)?;
            Some(Found::Semantic(entry, c.score))
        })
    }

    /// Counts a lookup's result.
    pub fn count(&self, found: Option<&Found>) {
        let counter = match found {
            Some(Found::Exact(_)) => &self.exact_hits,
            Some(Found::Semantic(..)) => &self.semantic_hits,
            None => &self.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an embedding input's lookup (apart from the answers', whose hit ratio the
    /// gateway weighs).
    pub fn count_embedding(&self, hit: bool) {
        let counter = if hit {
            &self.embedding_hits
        } else {
            &self.embedding_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps `payload` for `model` under `key` for the TTL (with the turn's `embedding`
    /// when it may answer semantically), unless `directives` forbid it.
    pub fn store(
        &self,
        model: &str,
        key: String,
        payload: Payload,
        embedding: Option<Vec<f32>>,
        directives: CacheDirectives,
    ) {
        let Some(owned) = self.owned(model).filter(|_| directives.may_store()) else {
            return;
        };
        let now = now_ms();
        let ttl = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = Entry::new(payload, now, now.saturating_add(ttl))
            .with_embedding(embedding.filter(|_| owned.semantic.is_some()));
        owned.partition.insert(key, entry);
    }

    /// Current counts.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            exact_hits: self.exact_hits.load(Ordering::Relaxed),
            semantic_hits: self.semantic_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            embedding_hits: self.embedding_hits.load(Ordering::Relaxed),
            embedding_misses: self.embedding_misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for p in &self.partitions {
            let (entries, bytes) = p.partition.size();
            stats.entries += entries;
            stats.bytes += bytes;
            add_evictions(&mut stats, p.partition.evictions());
        }
        stats
    }

    /// Shrinks the cache if `reading` is above the high watermark, each partition by its
    /// part of what is held; returns the bytes freed.
    pub fn relieve(&self, reading: MemoryReading) -> u64 {
        let sizes: Vec<u64> = self
            .partitions
            .iter()
            .map(|p| p.partition.size().1)
            .collect();
        let held: u64 = sizes.iter().sum();
        let to_free = self.settings.watermarks.bytes_to_free(reading, held);
        if to_free == 0 {
            return 0;
        }
        let part = |size: u64| (to_free as u128 * size as u128).div_ceil(held as u128) as u64;
        self.partitions
            .iter()
            .zip(sizes)
            .map(|(p, size)| p.partition.shrink(part(size)))
            .sum()
    }

    /// Writes every live entry to `path`; returns the entries and bytes written.
    pub fn save(&self, path: &Path) -> Result<(usize, u64), SnapshotError> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let file = self.contents();
        Ok((file.entries(), snapshot::write(path, &file)?))
    }

    /// Every live entry as a snapshot file's bytes, and how many there are (what `save`
    /// writes, kept in memory).
    pub fn snapshot_bytes(&self) -> Result<(usize, Vec<u8>), SnapshotError> {
        let file = self.contents();
        Ok((file.entries(), snapshot::encode(&file)?))
    }

    fn contents(&self) -> SnapshotFile {
        SnapshotFile {
            partitions: self
                .partitions
                .iter()
                .map(|p| (p.model.clone(), p.partition.stored()))
                .collect(),
        }
    }

    /// Loads the snapshot at `path` (none yet: nothing to load). Entries of models or
    /// revisions this cache does not serve are left out, as are expired ones; none lives
    /// longer than this cache's TTL (which may have been lowered since). Returns the
    /// entries loaded.
    pub fn restore(&self, path: &Path) -> Result<usize, SnapshotError> {
        snapshot::remove_stale_temporaries(path);
        let Some(file) = snapshot::read::<SnapshotFile>(path)? else {
            return Ok(0);
        };
        Ok(self.load(file))
    }

    /// Loads a snapshot from its file's `bytes`, as `restore` does from disk.
    pub fn restore_bytes(&self, bytes: &[u8]) -> Result<usize, SnapshotError> {
        Ok(self.load(snapshot::parse::<SnapshotFile>(bytes)?))
    }

    /// Files `file`'s entries of the models and revisions served here; returns how many.
    fn load(&self, file: SnapshotFile) -> usize {
        let mut loaded = 0;
        for (model, entries) in file.partitions {
            let Some(owned) = self.partitions.iter().find(|p| p.model == model) else {
                continue;
            };
            let ttl = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
            for mut stored in entries {
                stored.expires_ms = stored.expires_ms.min(stored.stored_ms.saturating_add(ttl));
                let (key, entry) = stored.into_entry();
                loaded += usize::from(owned.partition.insert(key, entry));
            }
        }
        loaded
    }
}

fn add_evictions(stats: &mut CacheStats, e: &Evictions) {
    stats.evicted_capacity += e.capacity.load(Ordering::Relaxed);
    stats.evicted_ttl += e.ttl.load(Ordering::Relaxed);
    stats.evicted_pressure += e.pressure.load(Ordering::Relaxed);
    stats.evicted_invalidated += e.invalidated.load(Ordering::Relaxed);
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
