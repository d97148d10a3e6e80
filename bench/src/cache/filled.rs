//! A cache of many entries in one scope (one system prompt for every request: the semantic
//! scan's worst case), filled in process: memory per entry, search time, snapshot write
//! and load. The snapshot is named for the agent's model revision, so that `served` can
//! start an agent on it. One entry is real: `PROBE`'s answer, with its turn's embedding.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferpool_agent::cache::normalize::for_embedding;
use inferpool_agent::cache::pressure::Watermarks;
use inferpool_agent::cache::{
    CacheDirectives, CacheSettings, CachedAnswer, Found, ModelId, PartitionSpec, Payload,
    PromptKey, ResponseCache, SemanticSettings,
};
use inferpool_agent::cache_config::SEMANTIC_DIM;
use inferpool_agent::engine::embed::Embedder;
use inferpool_agent::generation::FinishReason;
use inferpool_protocol::openai::{ChatCompletionRequest, ValidChatRequest};
use serde_json::{Value, json};

use super::percentiles;

/// The system prompt every entry shares.
pub const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";
/// The request whose answer is cached for real.
pub const PROBE: &str = "What is the capital of France?";
/// A paraphrase of it, which must be a semantic hit.
pub const PARAPHRASE: &str = "what's the capital of France?";

/// The chat request body for `turn` (as the benchmark's clients send it).
pub fn body(model: &str, turn: &str) -> Value {
    json!({"model": model, "temperature": 0, "max_tokens": 16, "messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": turn}]})
}

/// The key the agent files `body` under.
pub fn key_of(body: &Value) -> anyhow::Result<PromptKey> {
    let raw: ChatCompletionRequest = serde_json::from_value(body.clone())?;
    let valid = ValidChatRequest::try_from(raw)?;
    PromptKey::chat(&valid).ok_or_else(|| anyhow::anyhow!("not cacheable"))
}

fn answer(text: &str) -> Payload {
    let chunks = text
        .split_inclusive(' ')
        .map(|w| (w.to_owned(), vec![1, 2]))
        .collect();
    Payload::Answer(CachedAnswer {
        chunks,
        finish: FinishReason::Stop,
        prompt_tokens: 30,
        completion_tokens: 16,
    })
}

/// A pseudo-random unit vector (xorshift), far from any real sentence's.
fn random_unit(seed: &mut u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..SEMANTIC_DIM)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The agent's cache settings in this benchmark.
pub fn settings() -> CacheSettings {
    CacheSettings {
        capacity_bytes: 4 << 30,
        ttl: Duration::from_secs(3600),
        semantic: Some(SemanticSettings {
            threshold: 0.95,
            dim: SEMANTIC_DIM,
        }),
        watermarks: Watermarks {
            high: 1.0,
            low: 1.0,
        },
    }
}

fn cache_for(model: &ModelId) -> ResponseCache {
    ResponseCache::new(
        settings(),
        vec![PartitionSpec {
            model: model.clone(),
            semantic: true,
        }],
    )
}

const ALL: CacheDirectives = CacheDirectives {
    no_cache: false,
    no_store: false,
    max_age: None,
};

/// Fills a cache with `entries` (the probe among them), prints its figures and writes
/// its snapshot to `snapshot`.
pub fn report(
    embedder: &Embedder,
    model: &ModelId,
    entries: usize,
    snapshot: &Path,
) -> anyhow::Result<()> {
    let rss = || crate::proc_stats(std::process::id()).map(|s| s.rss_bytes);
    let before = rss()?;
    let cache = Arc::new(cache_for(model));
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    for i in 1..entries {
        let key = key_of(&body(
            &model.name,
            &format!("Question number {i}: tell me about item {i}."),
        ))?;
        let text = format!("Item {i} is a thing that this benchmark made up for its cache.");
        cache.store(
            &model.name,
            key.exact(),
            answer(&text),
            Some(random_unit(&mut seed)),
            ALL,
        );
    }
    let probe = key_of(&body(&model.name, PROBE))?;
    let probe_vector = embedder.embed(&[for_embedding(PROBE)])?.vectors.remove(0);
    cache.store(
        &model.name,
        probe.exact(),
        answer("The capital of France is Paris."),
        Some(probe_vector),
        ALL,
    );
    let filled = started.elapsed();
    let stats = cache.stats();
    let grown = rss()?.saturating_sub(before);
    println!("\n## {} entries in one scope, in process\n", stats.entries);
    println!("| figure | value |\n|---|---|");
    println!("| fill time | {:.2} s |", filled.as_secs_f64());
    println!(
        "| bytes per entry, as the cache counts them | {} |",
        stats.bytes / stats.entries.max(1)
    );
    println!(
        "| resident memory per entry (RSS growth / entries) | {} |",
        grown / stats.entries.max(1)
    );
    search_times(&cache, &model.name, embedder)?;
    snapshot_times(&cache, model, snapshot)
}

/// Search alone (the paraphrase's embedding against every vector of the scope).
fn search_times(cache: &ResponseCache, model: &str, embedder: &Embedder) -> anyhow::Result<()> {
    let key = key_of(&body(model, PARAPHRASE))?;
    let query = embedder
        .embed(&[for_embedding(PARAPHRASE)])?
        .vectors
        .remove(0);
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        let found = cache.semantic(model, &key, &query, ALL);
        samples.push(t.elapsed());
        anyhow::ensure!(
            matches!(found, Some(Found::Semantic(..))),
            "the paraphrase missed"
        );
    }
    let mut embeds = Vec::with_capacity(50);
    for _ in 0..50 {
        let t = Instant::now();
        embedder.embed(&[for_embedding(PARAPHRASE)])?;
        embeds.push(t.elapsed());
    }
    println!(
        "| semantic search over the scope, p50 / p99 ms | {} |",
        percentiles(&samples)
    );
    println!(
        "| embedding the turn (in process), p50 / p99 ms | {} |",
        percentiles(&embeds)
    );
    Ok(())
}

fn snapshot_times(cache: &ResponseCache, model: &ModelId, path: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    let (entries, bytes) = cache.save(path)?;
    let wrote = t.elapsed();
    let fresh = cache_for(model);
    let t = Instant::now();
    let loaded = fresh.restore(path)?;
    let read = t.elapsed();
    anyhow::ensure!(loaded == entries, "{loaded} of {entries} entries came back");
    println!(
        "| snapshot write ({entries} entries, {:.1} MiB) | {:.2} s |",
        crate::mib(bytes),
        wrote.as_secs_f64()
    );
    println!("| snapshot load | {:.2} s |", read.as_secs_f64());
    Ok(())
}
