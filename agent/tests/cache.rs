//! The response cache of a real agent process with the real model and the real embedding
//! model, on loopback: exact hits before tokenization, `Cache-Control`, semantic matches
//! and the lexical guard, memory pressure, snapshots across restarts, and partitions.

use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, EMBEDDING_MODEL, MODEL};
use inferpool_e2e::http::{EventStream, Reply, cache_header, metric, post};
use inferpool_e2e::parts::ScratchDir;
use inferpool_e2e::wait::wait_until;
use serde_json::{Value, json};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn greedy(content: &str) -> Value {
    chat(content, json!({"temperature": 0, "max_tokens": 8}))
}

/// POSTs a chat with `headers`; the reply and its `x-inferpool-cache`.
fn ask(
    agent: &AgentProcess,
    body: &Value,
    headers: &[(&str, &str)],
) -> anyhow::Result<(Reply, String)> {
    let reply = post(
        agent.http,
        "/v1/chat/completions",
        headers,
        body.to_string().as_bytes(),
    )?;
    anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
    let kind = cache_header(&reply.head);
    Ok((reply, kind))
}

fn count(agent: &AgentProcess, series: &str) -> anyhow::Result<f64> {
    Ok(metric(&agent.metrics()?, &format!("inferpool_agent_{series}")).unwrap_or(0.0))
}

const EXACT_HITS: &str = "cache_hits_total{kind=\"exact\"}";
const SEMANTIC_HITS: &str = "cache_hits_total{kind=\"semantic\"}";
const MISSES: &str = "cache_misses_total{kind=\"answer\"}";

#[tokio::test]
async fn exact_hits_replay_whole_and_streamed_answers_without_tokenizing() -> anyhow::Result<()> {
    let agent =
        AgentProcess::start(json!({"cache": {"capacity": "16Mi", "ttlSeconds": 600}})).await?;
    let body = chat("Name a river.", json!({"temperature": 0, "max_tokens": 12}));
    let (first, kind) = ask(&agent, &body, &[])?;
    assert_eq!(kind, "miss");
    let first = first.json()?;
    assert_eq!(
        (count(&agent, EXACT_HITS)?, count(&agent, MISSES)?),
        (0.0, 1.0)
    );
    let prompt_tokens = count(&agent, "prompt_tokens_total")?;
    // The same request streamed: replayed with the same text and usage, in SSE shape.
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    streamed_body["stream_options"] = json!({"include_usage": true});
    let mut stream = EventStream::open(agent.http, "/v1/chat/completions", &streamed_body)?;
    assert_eq!(cache_header(&stream.head), "exact");
    let (events, done) = stream.collect()?;
    assert!(done);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        Some(text.as_str()),
        first["choices"][0]["message"]["content"].as_str()
    );
    let usage = events
        .iter()
        .find(|e| !e["usage"].is_null())
        .map(|e| e["usage"].clone());
    assert_eq!(usage, Some(first["usage"].clone()));
    assert_eq!(count(&agent, EXACT_HITS)?, 1.0);
    assert_eq!(count(&agent, "cache_entries")?, 1.0);
    assert!(count(&agent, "cache_bytes")? > 0.0);
    // The hit read no prompt: nothing reached the tokenizer's count or the engine.
    assert_eq!(count(&agent, "prompt_tokens_total")?, prompt_tokens);
    // Sampled without a seed: never cached, not counted.
    let sampled = chat(
        "Name a river.",
        json!({"temperature": 0.9, "max_tokens": 12}),
    );
    for _ in 0..2 {
        ask(&agent, &sampled, &[])?;
    }
    assert_eq!(
        (count(&agent, EXACT_HITS)?, count(&agent, MISSES)?),
        (1.0, 1.0)
    );
    // Seeded: reproducible, so cached; a different max_tokens is a different answer.
    let seeded = chat(
        "Name a river.",
        json!({"temperature": 0.9, "seed": 7, "max_tokens": 12}),
    );
    let (a, _) = ask(&agent, &seeded, &[])?;
    let (b, kind) = ask(&agent, &seeded, &[])?;
    assert_eq!(
        (a.json()?["choices"].clone(), kind.as_str()),
        (b.json()?["choices"].clone(), "exact")
    );
    let (_, kind) = ask(
        &agent,
        &chat("Name a river.", json!({"temperature": 0, "max_tokens": 13})),
        &[],
    )?;
    assert_eq!(kind, "miss");
    Ok(())
}

#[tokio::test]
async fn cache_control_is_obeyed() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({})).await?;
    let body = greedy("Say yes.");
    assert_eq!(
        ask(&agent, &body, &[("Cache-Control", "no-store")])?.1,
        "miss"
    );
    assert_eq!(
        ask(&agent, &body, &[])?.1,
        "miss",
        "no-store stored the answer"
    );
    assert_eq!(ask(&agent, &body, &[])?.1, "exact");
    assert_eq!(
        ask(&agent, &body, &[("Cache-Control", "no-cache")])?.1,
        "miss"
    );
    // Ages count in whole seconds: max-age=0 refuses the entry once it is a second old.
    let refused = wait_until(Duration::from_secs(10), || async {
        let kind = ask(&agent, &body, &[("Cache-Control", "max-age=0")])
            .ok()?
            .1;
        (kind == "miss").then_some(())
    })
    .await;
    assert!(refused.is_ok(), "max-age=0 kept answering from the cache");
    assert_eq!(
        ask(&agent, &body, &[("Cache-Control", "max-age=3600")])?.1,
        "exact"
    );
    Ok(())
}

#[tokio::test]
async fn a_paraphrase_is_a_semantic_hit_and_a_reversed_question_is_not() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({"cache": {"semantic": {"enabled": true}}})).await?;
    assert_eq!(
        ask(
            &agent,
            &greedy("How do I create a virtual environment in Python?"),
            &[]
        )?
        .1,
        "miss"
    );
    let (paraphrase, kind) = ask(
        &agent,
        &greedy("how do i make a python virtual environment"),
        &[],
    )?;
    assert_eq!(kind, "semantic");
    assert_eq!(
        paraphrase.json()?["usage"]["completion_tokens"]
            .as_u64()
            .map(|n| n > 0),
        Some(true)
    );
    assert_eq!(
        ask(
            &agent,
            &greedy("Convert 100 degrees Celsius to Fahrenheit."),
            &[]
        )?
        .1,
        "miss"
    );
    let reversed = greedy("Convert 100 degrees Fahrenheit to Celsius.");
    assert_eq!(
        ask(&agent, &reversed, &[])?.1,
        "miss",
        "a reversed question got a cached answer"
    );
    // Another system prompt is another scope: the same turn is never matched across.
    let plain = greedy("What is the capital of France?");
    assert_eq!(ask(&agent, &plain, &[])?.1, "miss");
    assert_eq!(ask(&agent, &plain, &[])?.1, "exact");
    let mut other = plain.clone();
    other["messages"] = json!([{"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "What is the capital of France?"}]);
    assert_eq!(ask(&agent, &other, &[])?.1, "miss");
    assert_eq!(count(&agent, SEMANTIC_HITS)?, 1.0);
    Ok(())
}

#[tokio::test]
async fn memory_pressure_shrinks_the_cache() -> anyhow::Result<()> {
    // Watermarks every process is above: each reading must empty the cache.
    let pressure = json!({"highWatermark": 0.001, "lowWatermark": 0.001, "checkSeconds": 1});
    let agent = AgentProcess::start(json!({"cache": {"memoryPressure": pressure}})).await?;
    ask(&agent, &greedy("Say one."), &[])?;
    ask(&agent, &greedy("Say two."), &[])?;
    let shrunk = wait_until(Duration::from_secs(30), || async {
        let evicted = count(&agent, "cache_evictions_total{reason=\"pressure\"}").ok()?;
        let entries = count(&agent, "cache_entries").ok()?;
        (evicted >= 2.0 && entries == 0.0).then_some(())
    })
    .await;
    assert!(shrunk.is_ok(), "{}", agent.metrics()?);
    assert_eq!(ask(&agent, &greedy("Say one."), &[])?.1, "miss");
    Ok(())
}

/// The config of an agent that keeps its cache in `dir`.
fn persistent(dir: &ScratchDir) -> Value {
    json!({"cache": {"persistence": {"enabled": true, "snapshotSeconds": 3600}},
        "cacheDir": dir.path()})
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_hits_and_a_bad_snapshot_starts_empty() -> anyhow::Result<()> {
    let dir = ScratchDir::new("cache-snapshot")?;
    let body = greedy("Name a colour.");
    let mut first = AgentProcess::start(persistent(&dir)).await?;
    assert_eq!(ask(&first, &body, &[])?.1, "miss");
    first.terminate()?;
    let status = first.exited(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(0), "{}", first.log_text());
    let snapshot = dir.path().join("response-cache.snapshot");
    let written = std::fs::read(&snapshot)?;

    let second = AgentProcess::start(persistent(&dir)).await?;
    assert_eq!(ask(&second, &body, &[])?.1, "exact");
    assert_eq!(
        count(&second, "prompt_tokens_total")?,
        0.0,
        "the hit ran the engine"
    );
    assert_eq!(
        count(&second, "generation_tokens_total")?,
        0.0,
        "a replayed answer counted as generated"
    );
    drop(second);

    for bad in [
        written[..written.len() / 2].to_vec(),
        b"not a snapshot at all".to_vec(),
    ] {
        std::fs::write(&snapshot, &bad)?;
        let agent = AgentProcess::start(persistent(&dir)).await?;
        assert_eq!(ask(&agent, &body, &[])?.1, "miss");
        assert!(
            agent.log_text().contains("snapshot unreadable"),
            "{}",
            agent.log_text()
        );
    }
    Ok(())
}

#[tokio::test]
async fn one_models_partition_never_evicts_the_others() -> anyhow::Result<()> {
    // 8 KiB in all, 4 KiB per model: one embedding fits; a few dozen answers overflow.
    let agent = AgentProcess::start(json!({"cache": {"capacity": "8Ki"}})).await?;
    let embed = json!({"model": EMBEDDING_MODEL, "input": "a sentence to keep"}).to_string();
    let embed_once = || -> anyhow::Result<()> {
        let reply = post(agent.http, "/v1/embeddings", &[], embed.as_bytes())?;
        anyhow::ensure!(reply.status == 200, "{}", reply.body);
        Ok(())
    };
    embed_once()?;
    let embedding_hits = "cache_hits_total{kind=\"embedding\"}";
    // Each answer asked twice: more frequent than the embedding, so that one cache shared
    // by both models (TinyLFU admission) would evict the embedding for them.
    for i in 0..40 {
        let body = greedy(&format!("Count to {i}."));
        ask(&agent, &body, &[])?;
        ask(&agent, &body, &[])?;
    }
    assert!(count(&agent, "cache_evictions_total{reason=\"capacity\"}")? > 0.0);
    embed_once()?;
    assert_eq!(
        count(&agent, embedding_hits)?,
        1.0,
        "the answers evicted the embedding"
    );
    Ok(())
}
