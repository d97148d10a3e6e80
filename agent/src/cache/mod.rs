//! The response cache: complete answers to deterministic requests (greedy, or sampled with
//! a seed), keyed by the model, the exact prompt tokens and every setting that shapes the
//! answer. Least recently used entries are evicted within a byte budget and every entry
//! expires after a TTL. A hit replays the recorded text events without touching the engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;

use crate::generation::{FinishReason, GenerationRequest};

/// How big and how fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most bytes of keys and answers held.
    pub capacity_bytes: u64,
    /// How long an entry stays valid.
    pub ttl: Duration,
}

/// What identifies an answer: only requests whose answer is reproducible get one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    model: String,
    prompt: Vec<u32>,
    /// Sampling settings, stop tokens, stop strings and the token limit, spelled out.
    settings: String,
}

impl CacheKey {
    /// The key of `generation` for `model` with stop strings `stops`, or `None` when the
    /// answer is not reproducible (sampled without a seed).
    pub fn of(model: &str, generation: &GenerationRequest, stops: &[String]) -> Option<Self> {
        let s = &generation.sampling;
        if s.temperature > 0.0 && s.seed.is_none() {
            return None;
        }
        let settings = format!(
            "{s:?}|{}|{:?}|{stops:?}",
            generation.max_tokens, generation.stop_tokens
        );
        Some(Self {
            model: model.to_owned(),
            prompt: generation.prompt.clone(),
            settings,
        })
    }

    fn bytes(&self) -> usize {
        self.model.len() + self.prompt.len() * 4 + self.settings.len()
    }
}

/// A complete answer as it was streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    /// Text deltas with the token ids behind each.
    pub chunks: Vec<(String, Vec<u32>)>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens generated.
    pub completion_tokens: usize,
}

impl CachedAnswer {
    fn bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|(text, ids)| text.len() + ids.len() * 4 + 48)
            .sum()
    }
}

/// Counts for load reports and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that were not.
    pub misses: u64,
}

/// The agent's response cache.
#[derive(Debug)]
pub struct ResponseCache {
    entries: Cache<CacheKey, CachedAnswer>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Bookkeeping per entry beyond its key and answer.
const ENTRY_OVERHEAD: usize = 96;

impl ResponseCache {
    /// An empty cache.
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.capacity_bytes)
            .weigher(|k: &CacheKey, v: &CachedAnswer| {
                u32::try_from(k.bytes() + v.bytes() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .time_to_live(settings.ttl)
            .build();
        Self {
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The answer for `key`, counting the hit or miss.
    pub fn get(&self, key: &CacheKey) -> Option<CachedAnswer> {
        let found = self.entries.get(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `answer` for `key`.
    pub fn insert(&self, key: CacheKey, answer: CachedAnswer) {
        self.entries.insert(key, answer);
    }

    /// Current counts (after moka's pending maintenance, so sizes are up to date).
    pub fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks();
        CacheStats {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampling::SamplingParams;
    use crate::generation::Priority;

    fn generation(prompt: Vec<u32>, temperature: f32, seed: Option<u64>) -> GenerationRequest {
        GenerationRequest {
            prompt,
            max_tokens: 8,
            stop_tokens: vec![2],
            deadline: None,
            sampling: SamplingParams {
                temperature,
                seed,
                ..SamplingParams::default()
            },
            priority: Priority::Normal,
        }
    }

    fn answer(text: &str) -> CachedAnswer {
        CachedAnswer {
            chunks: vec![(text.to_owned(), vec![7])],
            finish: FinishReason::Stop,
            completion_tokens: 1,
        }
    }

    #[test]
    fn only_reproducible_requests_have_keys_and_every_setting_counts() {
        let greedy = CacheKey::of("m", &generation(vec![1, 2], 0.0, None), &[]);
        assert!(greedy.is_some());
        assert!(CacheKey::of("m", &generation(vec![1, 2], 0.7, Some(3)), &[]).is_some());
        assert!(CacheKey::of("m", &generation(vec![1, 2], 0.7, None), &[]).is_none());
        let other_prompt = CacheKey::of("m", &generation(vec![1, 3], 0.0, None), &[]);
        let other_stop = CacheKey::of("m", &generation(vec![1, 2], 0.0, None), &["x".into()]);
        let other_model = CacheKey::of("n", &generation(vec![1, 2], 0.0, None), &[]);
        for other in [other_prompt, other_stop, other_model] {
            assert_ne!(greedy, other);
        }
    }

    #[test]
    fn hits_misses_and_expiry() {
        let cache = ResponseCache::new(CacheSettings {
            capacity_bytes: 1 << 20,
            ttl: Duration::from_millis(200),
        });
        let key = CacheKey::of("m", &generation(vec![1, 2], 0.0, None), &[]).unwrap();
        assert_eq!(cache.get(&key), None);
        cache.insert(key.clone(), answer("hello"));
        assert_eq!(cache.get(&key), Some(answer("hello")));
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.hits, stats.misses), (1, 1, 1));
        assert!(stats.bytes > 0);
        // moka reads its own clock: wait for the TTL to pass on the real one.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.entries.get(&key).is_some() {
            assert!(std::time::Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_byte_budget_evicts() {
        let cache = ResponseCache::new(CacheSettings {
            capacity_bytes: 4096,
            ttl: Duration::from_secs(60),
        });
        for i in 0..200 {
            let key = CacheKey::of("m", &generation(vec![i], 0.0, None), &[]).unwrap();
            cache.insert(key, answer(&"x".repeat(100)));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= 4096, "{stats:?}");
        assert!(stats.entries < 200 && stats.entries > 0, "{stats:?}");
    }
}
