use super::*;

fn settings(capacity_bytes: u64, semantic: bool) -> CacheSettings {
    CacheSettings {
        capacity_bytes,
        ttl: Duration::from_secs(60),
        semantic: semantic.then_some(SemanticSettings {
            threshold: 0.9,
            dim: 2,
        }),
        watermarks: Watermarks {
            high: 0.9,
            low: 0.8,
        },
    }
}

fn model(name: &str, revision: &str) -> ModelId {
    ModelId {
        name: name.into(),
        revision: revision.into(),
    }
}

fn specs() -> Vec<PartitionSpec> {
    vec![
        PartitionSpec {
            model: model("chat", "r1"),
            semantic: true,
        },
        PartitionSpec {
            model: model("embed", "r1"),
            semantic: false,
        },
    ]
}

fn answer(text: &str) -> Payload {
    Payload::answer_of(text)
}

fn key(turn: &str) -> PromptKey {
    PromptKey::from_parts("scope".into(), turn.into(), true)
}

fn unit(x: f32, y: f32) -> Vec<f32> {
    let n = (x * x + y * y).sqrt();
    vec![x / n, y / n]
}

const ALL: CacheDirectives = CacheDirectives {
    no_cache: false,
    no_store: false,
    max_age: None,
};

#[test]
fn one_models_entries_never_evict_anothers() {
    let cache = ResponseCache::new(settings(64 * 1024, false), specs());
    let vector = Payload::Vector {
        values: vec![0.5; 8],
        tokens: 2,
    };
    cache.store("embed", "e".into(), vector, None, ALL);
    // Each answer read twice: more frequent than the vector, so that one cache shared by
    // both models (TinyLFU admission) would evict the vector for them.
    for i in 0..2000 {
        let key = format!("k{i}");
        cache.store("chat", key.clone(), answer(&"x".repeat(200)), None, ALL);
        cache.exact("chat", &key, ALL);
        cache.exact("chat", &key, ALL);
    }
    let stats = cache.stats();
    assert!(stats.evicted_capacity > 0, "{stats:?}");
    assert!(cache.exact("embed", "e", ALL).is_some());
}

#[test]
fn no_store_keeps_nothing_and_no_cache_skips_the_lookup() {
    let cache = ResponseCache::new(settings(1 << 20, false), specs());
    let no_store = CacheDirectives::parse(Some("no-store"));
    cache.store("chat", "k".into(), answer("a"), None, no_store);
    assert!(cache.exact("chat", "k", ALL).is_none());
    cache.store("chat", "k".into(), answer("a"), None, ALL);
    let no_cache = CacheDirectives::parse(Some("no-cache"));
    assert!(cache.exact("chat", "k", no_cache).is_none());
    assert!(cache.exact("chat", "k", ALL).is_some());
}

#[test]
fn a_close_turn_of_the_same_scope_is_a_semantic_hit_unless_the_check_refuses() {
    let cache = ResponseCache::new(settings(1 << 20, true), specs());
    let cached = key("Convert Celsius to Fahrenheit");
    cache.store(
        "chat",
        cached.exact(),
        answer("a"),
        Some(unit(1.0, 0.0)),
        ALL,
    );
    let near = unit(1.0, 0.1);
    let paraphrase = key("Please convert Celsius to Fahrenheit");
    let found = cache.semantic("chat", &paraphrase, &near, ALL);
    assert!(matches!(found, Some(Found::Semantic(_, s)) if s > 0.9));
    let reversed = key("Convert Fahrenheit to Celsius");
    assert!(cache.semantic("chat", &reversed, &near, ALL).is_none());
    let other_scope = PromptKey::from_parts("other".into(), paraphrase.turn().into(), true);
    assert!(cache.semantic("chat", &other_scope, &near, ALL).is_none());
    assert!(
        cache
            .semantic("chat", &paraphrase, &unit(0.0, 1.0), ALL)
            .is_none()
    );
}

#[test]
fn evicted_entries_leave_the_semantic_index() {
    let cache = ResponseCache::new(settings(1 << 20, true), specs());
    let k = key("hello there");
    cache.store("chat", k.exact(), answer("a"), Some(unit(1.0, 0.0)), ALL);
    let index = cache
        .owned("chat")
        .and_then(|o| o.semantic.clone())
        .unwrap();
    assert_eq!(index.len(), 1);
    let reading = MemoryReading {
        used: 100,
        limit: 100,
    };
    assert!(cache.relieve(reading) > 0);
    assert_eq!(index.len(), 0);
    assert_eq!(cache.stats().evicted_pressure, 1);
}

#[test]
fn relief_happens_only_above_the_high_watermark() {
    let cache = ResponseCache::new(settings(1 << 20, false), specs());
    for i in 0..10 {
        cache.store("chat", format!("k{i}"), answer("abc"), None, ALL);
    }
    let calm = MemoryReading {
        used: 85,
        limit: 100,
    };
    assert_eq!(cache.relieve(calm), 0);
    assert_eq!(cache.stats().entries, 10);
    // 95 used of 100 with the low watermark at 80: 15 bytes to free, one entry is enough.
    let pressed = MemoryReading {
        used: 95,
        limit: 100,
    };
    assert!(cache.relieve(pressed) >= 15);
    assert_eq!(cache.stats().entries, 9);
}

#[test]
fn a_snapshot_brings_back_this_revisions_entries_and_their_index() {
    let dir = std::env::temp_dir().join(format!("inferpool-store-{}", std::process::id()));
    let path = dir.join("cache.snapshot");
    let cache = ResponseCache::new(settings(1 << 20, true), specs());
    let k = key("hello there");
    cache.store("chat", k.exact(), answer("a"), Some(unit(1.0, 0.0)), ALL);
    cache.store("embed", "e".into(), answer("b"), None, ALL);
    assert_eq!(cache.save(&path).unwrap().0, 2);

    let same = ResponseCache::new(settings(1 << 20, true), specs());
    assert_eq!(same.restore(&path).unwrap(), 2);
    assert!(same.exact("chat", &k.exact(), ALL).is_some());
    let paraphrase = key("hello there!");
    assert!(
        same.semantic("chat", &paraphrase, &unit(1.0, 0.05), ALL)
            .is_some()
    );

    let mut newer = specs();
    newer[0].model.revision = "r2".into();
    let other = ResponseCache::new(settings(1 << 20, true), newer);
    assert_eq!(other.restore(&path).unwrap(), 1);
    assert!(other.exact("chat", &k.exact(), ALL).is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hit_ratios_count_both_kinds() {
    let cache = ResponseCache::new(settings(1 << 20, false), specs());
    let hit = Found::Exact(Arc::new(Entry::new(answer("a"), 0, 1)));
    cache.count(Some(&hit));
    cache.count(None);
    let stats = cache.stats();
    assert_eq!((stats.exact_hits, stats.misses), (1, 1));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
}
