//! The OpenAI-compatible HTTP API of a real agent process with the real model, on loopback.

use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, EMBEDDING_MODEL, MODEL};
use inferpool_e2e::http::{EventStream, metric, post, post_json};
use inferpool_e2e::wait::wait_until;
use serde_json::{Value, json};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// The text and usage of a streamed answer (chat deltas or completion texts).
fn streamed(events: &[Value]) -> (String, Option<Value>, Option<String>) {
    let mut text = String::new();
    let (mut usage, mut finish) = (None, None);
    for e in events {
        if let Some(choice) = e["choices"].get(0) {
            let piece = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str());
            text.push_str(piece.unwrap_or_default());
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        if !e["usage"].is_null() {
            usage = Some(e["usage"].clone());
        }
    }
    (text, usage, finish)
}

#[tokio::test]
async fn chat_and_completions_streamed_or_not_are_greedy_reproducible() -> anyhow::Result<()> {
    // Without the response cache: the engine itself must repeat its answer. Without prefix
    // caching: the second request would prefill only its last tokens after the first's
    // cached blocks, which rounds differently on 8-bit weights (tests/model.rs).
    let config = json!({"cache": {"enabled": false}, "batching": {"prefixCaching": false}});
    let agent = AgentProcess::start(config).await?;
    let body = chat(
        "Name three fruits.",
        json!({"temperature": 0, "max_tokens": 16}),
    );
    let first = post_json(agent.http, "/v1/chat/completions", &body)?;
    assert_eq!(first.status, 200, "{}", first.body);
    let (a, b) = (
        first.json()?,
        post_json(agent.http, "/v1/chat/completions", &body)?.json()?,
    );
    let answer = a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!answer.is_empty());
    assert_eq!(
        a["choices"], b["choices"],
        "greedy output changed between runs"
    );
    assert_eq!(a["object"], "chat.completion");
    let usage = &a["usage"];
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap_or(0);
    match a["choices"][0]["finish_reason"].as_str() {
        Some("length") => assert_eq!(completion_tokens, 16, "{a}"),
        Some("stop") => assert!((1..16).contains(&completion_tokens), "{a}"),
        other => panic!("finish_reason {other:?}"),
    }
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap_or(0) + completion_tokens)
    );

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let mut sse = EventStream::open(agent.http, "/v1/chat/completions", &stream_body)?;
    assert_eq!(sse.status, 200);
    let (events, done) = sse.collect()?;
    assert!(done, "the stream must end with [DONE]");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let (text, usage, finish) = streamed(&events);
    assert_eq!(text, answer, "streaming changed the answer");
    assert_eq!(
        usage.as_ref().map(|u| u["completion_tokens"].clone()),
        Some(json!(completion_tokens))
    );
    assert_eq!(finish.as_deref(), a["choices"][0]["finish_reason"].as_str());

    let completion = json!({"model": MODEL, "prompt": "One, two, three,", "max_tokens": 8,
        "temperature": 0});
    let whole = post_json(agent.http, "/v1/completions", &completion)?.json()?;
    assert_eq!(whole["object"], "text_completion");
    let whole_text = whole["choices"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut streamed_completion = completion.clone();
    streamed_completion["stream"] = json!(true);
    let (events, done) =
        EventStream::open(agent.http, "/v1/completions", &streamed_completion)?.collect()?;
    assert!(done);
    assert_eq!(streamed(&events).0, whole_text);
    Ok(())
}

#[tokio::test]
async fn stop_strings_models_and_embeddings() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({})).await?;
    let greedy = chat(
        "Count from 1 to 10, separated by commas.",
        json!({"temperature": 0, "max_tokens": 40}),
    );
    let full = post_json(agent.http, "/v1/chat/completions", &greedy)?.json()?;
    let text = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cut = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let stop = text[cut..].chars().take(3).collect::<String>();
    let mut stopped = greedy.clone();
    stopped["stop"] = json!([stop]);
    let reply = post_json(agent.http, "/v1/chat/completions", &stopped)?.json()?;
    let short = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert!(
        text.starts_with(short) && !short.contains(&stop),
        "{short:?} / {stop:?}"
    );

    let (status, models) = inferpool_e2e::http::get(agent.http, "/v1/models")?;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models)?;
    let ids: Vec<_> = models["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!(MODEL), json!(EMBEDDING_MODEL)]);

    let emb = post_json(
        agent.http,
        "/v1/embeddings",
        &json!({"model": EMBEDDING_MODEL, "input": ["a cat", "a kitten", "tax law"]}),
    )?
    .json()?;
    let vectors: Vec<Vec<f64>> = emb["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            d["embedding"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]));
    assert!(emb["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0);
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_the_right_error_and_the_agent_keeps_serving() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({})).await?;
    let path = "/v1/chat/completions";
    let long_prompt = "word ".repeat(9000);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{\"model\": ".to_vec(), 400, "invalid_request_error"),
        (chat("hi", json!({"model": "nope"})).to_string().into_bytes(), 404, "model_not_found"),
        (chat("hi", json!({"max_tokens": -1})).to_string().into_bytes(), 400, "invalid_request_error"),
        (chat(&long_prompt, json!({})).to_string().into_bytes(), 413, "context_length_exceeded"),
        (b"{\"model\": \"smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(),
            400, "invalid_request_error"),
        (vec![b' '; 10 * 1024 * 1024], 413, "request_too_large"),
    ];
    for (body, status, kind) in cases {
        let reply = post(agent.http, path, &[], &body)?;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.json()?["error"]["type"], kind, "{}", reply.body);
    }
    let bad_priority = post(
        agent.http,
        path,
        &[("x-inferpool-priority", "urgent")],
        chat("hi", json!({})).to_string().as_bytes(),
    )?;
    assert_eq!(bad_priority.status, 400);
    let ok = post_json(agent.http, path, &chat("Say hi.", json!({"max_tokens": 4})))?;
    assert_eq!(
        ok.status, 200,
        "the agent stopped serving after bad input: {}",
        ok.body
    );
    let metrics = agent.metrics()?;
    assert!(metrics.contains(
        "inferpool_agent_requests_total{endpoint=\"chat\",outcome=\"context_length_exceeded\"} 1"
    ));
    Ok(())
}

#[tokio::test]
async fn sixteen_concurrent_streams_complete_with_correct_token_counts() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({})).await?;
    let http = agent.http;
    let streams: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || -> anyhow::Result<(usize, Value, Option<String>)> {
                let body = chat(
                    &format!("Write a long story about ship number {i}."),
                    json!({
                    "max_tokens": 24, "seed": i, "temperature": 0.8, "stream": true,
                    "stream_options": {"include_usage": true}}),
                );
                let (events, done) =
                    EventStream::open(http, "/v1/chat/completions", &body)?.collect()?;
                anyhow::ensure!(done, "stream {i} ended without [DONE]");
                let content_events = events
                    .iter()
                    .filter(|e| {
                        e["choices"][0]["delta"]["content"]
                            .as_str()
                            .is_some_and(|c| !c.is_empty())
                    })
                    .count();
                let (_, usage, finish) = streamed(&events);
                Ok((content_events, usage.unwrap_or_default(), finish))
            })
        })
        .collect();
    for handle in streams {
        let (content_events, usage, finish) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        let completion = usage["completion_tokens"].as_u64().unwrap_or(0) as usize;
        match finish.as_deref() {
            Some("length") => assert_eq!(completion, 24),
            Some("stop") => assert!(completion <= 24),
            other => panic!("unexpected finish {other:?}"),
        }
        assert!(
            content_events > 0 && content_events <= completion,
            "{content_events} events for {completion} tokens"
        );
    }
    // The engine publishes its load after the step that sent the last events: every
    // block comes back, shortly after the last [DONE].
    wait_until(Duration::from_secs(30), || async {
        let text = agent.metrics().ok()?;
        (metric(&text, "inferpool_agent_kv_cache_blocks_used") == Some(0.0)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({})).await?;
    let body = chat(
        "Write a very long essay about the ocean.",
        json!({"max_tokens": 2000, "stream": true}),
    );
    let mut sse = EventStream::open(agent.http, "/v1/chat/completions", &body)?;
    for _ in 0..4 {
        assert!(sse.next_data()?.is_some());
    }
    let running = metric(&agent.metrics()?, "inferpool_agent_kv_cache_blocks_used").unwrap_or(0.0);
    assert!(running > 0.0, "the request holds no blocks while running");
    drop(sse);
    wait_until(Duration::from_secs(30), || async {
        let text = agent.metrics().ok()?;
        let freed = metric(&text, "inferpool_agent_kv_cache_blocks_used") == Some(0.0)
            && metric(&text, "inferpool_agent_requests_running") == Some(0.0);
        freed.then_some(())
    })
    .await?;
    let metrics = agent.metrics()?;
    assert!(
        metrics
            .contains("inferpool_agent_requests_total{endpoint=\"chat\",outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_during_load_finishes_every_accepted_request_and_exits_zero() -> anyhow::Result<()>
{
    let mut agent = AgentProcess::start(json!({"batching": {"maxBatchSize": 2}})).await?;
    let http = agent.http;
    let mut streams = Vec::new();
    for i in 0..4 {
        let body = chat(
            &format!("Tell a story about the number {i}."),
            json!({"max_tokens": 32,
            "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
        );
        let mut sse = EventStream::open(http, "/v1/chat/completions", &body)?;
        assert_eq!(sse.status, 200);
        assert!(sse.next_data()?.is_some(), "the role chunk comes at once");
        streams.push(sse);
    }
    // Two run, two wait in the queue: all four were accepted before the signal.
    agent.terminate()?;
    wait_until(Duration::from_secs(10), || async {
        matches!(inferpool_e2e::http::get(http, "/readyz"), Ok((503, _))).then_some(())
    })
    .await?;
    let refused = post_json(http, "/v1/chat/completions", &chat("hi", json!({})))?;
    assert_eq!(
        (refused.status, refused.json()?["error"]["type"].clone()),
        (503, json!("draining"))
    );
    for mut sse in streams {
        let (events, done) = sse.collect()?;
        assert!(done, "an accepted request was cut off by the drain");
        let (_, usage, finish) = streamed(&events);
        assert!(finish.is_some() && usage.is_some());
    }
    let status = agent.exited(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
    Ok(())
}
