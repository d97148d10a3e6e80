//! What the fuzz target `cache_snapshot` (fuzz/) and its corpus replay
//! (tests/fuzz_corpus.rs) run on the snapshot loader: a hostile snapshot file (truncated,
//! corrupt, foreign, or well framed around a hostile payload) loads or is refused, never a
//! panic or an allocation sized by what the file declares; and whatever loads is saved and
//! loaded again.

use std::time::Duration;

use super::pressure::{MemoryReading, Watermarks};
use super::snapshot;
use super::store::{CacheSettings, ModelId, PartitionSpec, ResponseCache, SemanticSettings};

/// The model names and revision a fuzz input must name for its entries to load.
pub const MODELS: [&str; 2] = ["chat", "embed"];
/// The revision of both.
pub const REVISION: &str = "r1";
/// The semantic partition's vector dimension.
pub const DIM: usize = 4;

/// The fuzz target `cache_snapshot`: `data` as a whole file, then framed as a valid
/// header around it (so that the fuzzer reaches the payload decoder past the checksum).
#[doc(hidden)]
pub fn cache_snapshot(data: &[u8]) {
    for bytes in [data, &snapshot::frame(data)] {
        let cache = fuzz_cache();
        if let Ok(loaded) = cache.restore_bytes(bytes) {
            check_loaded(&cache, loaded);
        }
    }
}

/// What loaded is consistent, survives a save and a load, and can be shrunk.
fn check_loaded(cache: &ResponseCache, loaded: usize) {
    let (held, bytes) = cache
        .snapshot_bytes()
        .expect("a loaded cache is saved again");
    assert!(held <= loaded, "{held} entries held of {loaded} loaded");
    let again = fuzz_cache()
        .restore_bytes(&bytes)
        .expect("what the cache saves, it loads");
    // Not equal: an entry may expire between the two.
    assert!(again <= held, "{again} entries loaded of {held} saved");
    let stats = cache.stats();
    let full = MemoryReading {
        used: stats.bytes.max(1),
        limit: stats.bytes.max(1),
    };
    cache.relieve(full);
}

/// A cache of a semantic and a plain partition whose TTL keeps every entry the input
/// dates in the future (a corpus file's entries would otherwise expire once written).
fn fuzz_cache() -> ResponseCache {
    let settings = CacheSettings {
        capacity_bytes: 1 << 20,
        ttl: Duration::MAX,
        semantic: Some(SemanticSettings {
            threshold: 0.9,
            dim: DIM,
        }),
        watermarks: Watermarks {
            high: 0.9,
            low: 0.5,
        },
    };
    let specs = MODELS.iter().map(|name| PartitionSpec {
        model: ModelId {
            name: (*name).into(),
            revision: REVISION.into(),
        },
        semantic: *name == "chat",
    });
    ResponseCache::new(settings, specs.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/cache_snapshot")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The seed reaches the deep path: every entry of both models loads, the semantic
    /// one with its vector.
    #[test]
    fn the_valid_seed_loads_every_entry() {
        let cache = fuzz_cache();
        assert_eq!(
            cache
                .restore_bytes(&corpus("valid_two_models.snap"))
                .unwrap(),
            3
        );
        assert_eq!(cache.stats().entries, 3);
        let framed = snapshot::frame(&corpus("payload_two_models"));
        assert_eq!(fuzz_cache().restore_bytes(&framed).unwrap(), 3);
    }

    #[test]
    fn seeds_of_another_revision_or_expired_load_nothing() {
        for name in ["payload_other_revision", "payload_expired"] {
            let framed = snapshot::frame(&corpus(name));
            assert_eq!(fuzz_cache().restore_bytes(&framed).unwrap(), 0, "{name}");
        }
    }
}
