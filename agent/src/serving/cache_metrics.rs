//! The response cache's metrics: hits by kind, misses, entries, bytes, evictions by reason
//! (fixed label sets) and the lookup's duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::mirrored::MirroredCounter;
use crate::cache::CacheStats;

/// Label of a hit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Label of an eviction counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Mirrors of the cache's own totals, refreshed before each scrape.
#[derive(Debug)]
pub(super) struct CacheMetrics {
    hits: Family<KindLabels, Counter>,
    exact: MirroredCounter,
    semantic: MirroredCounter,
    embedding: MirroredCounter,
    misses: Family<KindLabels, Counter>,
    answer_misses: MirroredCounter,
    embedding_misses: MirroredCounter,
    evictions: Family<ReasonLabels, Counter>,
    /// capacity, ttl, pressure, invalidated.
    evicted: [MirroredCounter; 4],
    entries: Gauge,
    bytes: Gauge,
    /// Seconds per lookup (exact, and the turn's embedding and search when semantic).
    pub(super) lookup: Histogram,
}

const REASONS: [&str; 4] = ["capacity", "ttl", "pressure", "invalidated"];

impl CacheMetrics {
    pub(super) fn new() -> Self {
        let hits = Family::default();
        let misses = Family::default();
        let evictions = Family::default();
        Self {
            exact: MirroredCounter::over(&hits, &KindLabels { kind: "exact" }),
            semantic: MirroredCounter::over(&hits, &KindLabels { kind: "semantic" }),
            evicted: REASONS
                .map(|reason| MirroredCounter::over(&evictions, &ReasonLabels { reason })),
            embedding: MirroredCounter::over(&hits, &KindLabels { kind: "embedding" }),
            hits,
            answer_misses: MirroredCounter::over(&misses, &KindLabels { kind: "answer" }),
            embedding_misses: MirroredCounter::over(&misses, &KindLabels { kind: "embedding" }),
            misses,
            evictions,
            entries: Gauge::default(),
            bytes: Gauge::default(),
            // 50 µs .. ~1.6 s
            lookup: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "cache_hits",
            "Lookups answered by the response cache, by kind",
            self.hits.clone(),
        );
        r.register(
            "cache_misses",
            "Cacheable lookups not in the cache, by kind (answer, embedding)",
            self.misses.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries removed, by reason",
            self.evictions.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the response cache",
            self.entries.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes held by the response cache",
            self.bytes.clone(),
        );
        r.register(
            "cache_lookup_seconds",
            "Response cache lookup time",
            self.lookup.clone(),
        );
    }

    pub(super) fn observe(&self, stats: &CacheStats) {
        self.exact.observe(stats.exact_hits);
        self.semantic.observe(stats.semantic_hits);
        self.embedding.observe(stats.embedding_hits);
        self.answer_misses.observe(stats.misses);
        self.embedding_misses.observe(stats.embedding_misses);
        let evicted = [
            stats.evicted_capacity,
            stats.evicted_ttl,
            stats.evicted_pressure,
            stats.evicted_invalidated,
        ];
        for (mirror, total) in self.evicted.iter().zip(evicted) {
            mirror.observe(total);
        }
        self.entries
            .set(i64::try_from(stats.entries).unwrap_or(i64::MAX));
        self.bytes
            .set(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
    }
}
