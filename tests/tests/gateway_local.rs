//! The gateway in local mode: real agent processes with the real model behind the real
//! gateway, on loopback.

use std::time::Duration;

use anyhow::Context as _;
use inferpool_e2e::http::{EventStream, cache_header, has_answer, post, post_json, send_request};
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::streams::Clients;
use inferpool_e2e::wait::wait_until;
use serde_json::{Value, json};

const MODEL: &str = "smollm2-local";
/// The pool `manifest` makes (the gateway's metrics are labelled with it).
const POOL: &str = "gw";
/// The embedding model every local agent serves (named after its folder).
const EMBEDDING: &str = "all-minilm-l6-v2";

/// Without prefix caching: the first test compares answers that round robin sends to two
/// agents, one of which has cached the probe's prompt blocks (which share the default
/// system prompt), and a reused prefix rounds like a chunked prefill on 8-bit weights.
fn manifest(strategy: &str) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {POOL}\nspec:\n  \
         model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 2\n  routing:\n    \
         strategy: {strategy}\n  batching:\n    prefixCaching: false\n"
    )
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// The pool still answers a chat after what a test put it through, and stops cleanly.
async fn serves_then_stops(pool: LocalPool) -> anyhow::Result<()> {
    let after = post_json(
        pool.addr,
        "/v1/chat/completions",
        &chat("hi", json!({"max_tokens": 2})),
    )?;
    assert_eq!(after.status, 200, "the pool serves on: {}", after.body);
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}

#[tokio::test]
async fn the_gateway_answers_like_an_agent_and_refuses_bad_requests_itself() -> anyhow::Result<()> {
    let pool = LocalPool::start(&manifest("round_robin"), MODEL).await?;
    let body = chat("Name a colour.", json!({"temperature": 0, "max_tokens": 8}));
    let whole = post_json(pool.addr, "/v1/chat/completions", &body)?;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let whole = whole.json()?;
    assert_eq!(whole["object"], "chat.completion");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (events, done) =
        EventStream::open(pool.addr, "/v1/chat/completions", &streamed)?.collect()?;
    assert!(done);
    let joined: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        joined, text,
        "streaming through the gateway changed the greedy answer"
    );
    assert_eq!(
        events.last().map(|e| e["usage"].clone()),
        Some(whole["usage"].clone())
    );
    let completion = post_json(
        pool.addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "One, two,", "max_tokens": 4}),
    )?;
    assert_eq!(
        (completion.status, completion.json()?["object"].clone()),
        (200, json!("text_completion"))
    );
    let (status, models) = pool.get("/v1/models")?;
    assert_eq!(status, 200);
    let ids: Vec<Value> = serde_json::from_str::<Value>(&models)?["data"]
        .as_array()
        .map(|d| d.iter().map(|m| m["id"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        [json!(EMBEDDING), json!(MODEL)],
        "the pools' models, sorted"
    );

    check_embeddings(&pool)?;

    for (raw, status, kind) in [
        (b"{not json".to_vec(), 400, "invalid_request_error"),
        (
            chat("x", json!({"model": "nope"})).to_string().into_bytes(),
            404,
            "model_not_found",
        ),
        (
            chat("x", json!({"temperature": 9}))
                .to_string()
                .into_bytes(),
            400,
            "invalid_request_error",
        ),
        (
            chat(&"word ".repeat(9000), json!({}))
                .to_string()
                .into_bytes(),
            413,
            "context_length_exceeded",
        ),
    ] {
        let reply = post(pool.addr, "/v1/chat/completions", &[], &raw)?;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.json()?["error"]["type"], kind, "{}", reply.body);
    }
    let (status, metrics) = pool.get("/metrics")?;
    assert_eq!(status, 200);
    let count = |key: String| inferpool_e2e::http::metric(&metrics, &key).unwrap_or(0.0);
    let pool_key = |outcome: &str| {
        format!("inferpool_gateway_requests_total{{pool=\"{POOL}\",outcome=\"{outcome}\"}}")
    };
    // Three generations and two embeddings; an unknown model and an unknown embedding
    // model refused before routing.
    assert!(count(pool_key("ok")) >= 5.0, "{metrics}");
    // Each answered request is counted on the agent that answered it too.
    let on_agents: f64 = ["gw-0", "gw-1"]
        .iter()
        .map(|agent| {
            count(format!(
                "inferpool_gateway_agent_requests_total{{pool=\"{POOL}\",agent=\"{agent}\",outcome=\"ok\"}}"
            ))
        })
        .sum();
    assert_eq!(on_agents, count(pool_key("ok")), "{metrics}");
    assert_eq!(count(pool_key("context_length_exceeded")), 1.0);
    let none = "inferpool_gateway_requests_total{pool=\"_none\",outcome=\"model_not_found\"}";
    assert_eq!(count(none.into()), 2.0);
    for agent in ["gw-0", "gw-1"] {
        let healthy =
            format!("inferpool_gateway_agent_healthy{{pool=\"{POOL}\",agent=\"{agent}\"}}");
        assert_eq!(count(healthy), 1.0, "{metrics}");
    }
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}

/// `/v1/embeddings` through the gateway: the pool's agents serve the embedding model,
/// listed among the models; vectors are unit length, in input order, the same as floats
/// and as base64; an unknown embedding model is 404.
fn check_embeddings(pool: &LocalPool) -> anyhow::Result<()> {
    let (_, models) = pool.get("/v1/models")?;
    assert!(models.contains(EMBEDDING), "{models}");
    let texts = json!(["The cat sleeps.", "Stocks fell sharply.", "The cat sleeps."]);
    let body = json!({"model": EMBEDDING, "input": texts});
    let floats = post_json(pool.addr, "/v1/embeddings", &body)?;
    assert_eq!(floats.status, 200, "{}", floats.body);
    let floats = floats.json()?;
    let vectors: Vec<Vec<f64>> = (0..3)
        .map(|i| {
            let v = floats["data"][i]["embedding"].as_array().cloned();
            v.unwrap_or_default()
                .iter()
                .filter_map(Value::as_f64)
                .collect()
        })
        .collect();
    assert_eq!(vectors[0].len(), 384);
    let norm: f64 = vectors[0].iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3, "norm² {norm}");
    assert_eq!(vectors[0], vectors[2], "same text, same vector");
    assert_ne!(vectors[0], vectors[1]);
    assert!(
        floats["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let mut b64 = body.clone();
    b64["encoding_format"] = json!("base64");
    let encoded = post_json(pool.addr, "/v1/embeddings", &b64)?.json()?;
    let text = encoded["data"][1]["embedding"].as_str().unwrap_or_default();
    assert_eq!(
        text.len(),
        2048,
        "384 little-endian f32 are 2048 base64 characters"
    );
    let missing = post_json(
        pool.addr,
        "/v1/embeddings",
        &json!({"model": "no-such-embedder", "input": "x"}),
    )?;
    assert_eq!(
        (missing.status, missing.json()?["error"]["type"].clone()),
        (404, json!("model_not_found"))
    );
    Ok(())
}

/// The gateway's metric `name` for `agent` of the pool (`None` when unreadable).
fn agent_metric(pool: &LocalPool, name: &str, agent: &str) -> Option<f64> {
    let key = format!("inferpool_gateway_agent_{name}{{pool=\"{POOL}\",agent=\"{agent}\"}}");
    let (status, text) = pool.get("/metrics").ok()?;
    (status == 200).then(|| inferpool_e2e::http::metric(&text, &key))?
}

/// Whether the gateway counts `agent` healthy (from its metrics; `None` when unreadable).
fn healthy(pool: &LocalPool, agent: &str) -> Option<bool> {
    agent_metric(pool, "healthy", agent).map(|h| h == 1.0)
}

/// Requests the gateway has in flight on `agent`.
fn in_flight(pool: &LocalPool, agent: &str) -> Option<f64> {
    agent_metric(pool, "in_flight", agent)
}

/// The pool's retries so far.
fn retries(pool: &LocalPool) -> f64 {
    let key = format!("inferpool_gateway_retries_total{{pool=\"{POOL}\"}}");
    let text = pool.get("/metrics").map(|(_, t)| t).unwrap_or_default();
    inferpool_e2e::http::metric(&text, &key).unwrap_or(0.0)
}

/// Held by the tests that load the machine on purpose (a kill or a stop under load), so
/// that they do not run at once on two shared cores.
static UNDER_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two agents under least_load, both taking traffic, started with `args`.
async fn pool_of_two(args: &[&str]) -> anyhow::Result<LocalPool> {
    let pool = LocalPool::start_with(&manifest("least_load"), MODEL, args).await?;
    let agents = pool.agent_pids();
    anyhow::ensure!(agents.len() == 2, "{agents:?}");
    // The pool answers once one agent is ready; the tests need both.
    wait_until(Duration::from_secs(300), || async {
        let both = ["gw-0", "gw-1"]
            .iter()
            .all(|a| healthy(&pool, a) == Some(true));
        both.then_some(())
    })
    .await?;
    Ok(pool)
}

/// Two agents whose requests wait for an agent rather than get a 429 (under load all of
/// them may have to wait for the one that is left), and a stopped agent has all the time
/// that debug builds sharing two cores with other tests need to finish what it holds; and
/// the pid of `gw-0`.
async fn patient_pool() -> anyhow::Result<(LocalPool, u32)> {
    let args = [
        "--queue-wait-seconds",
        "600",
        "--drain-grace-seconds",
        "600",
    ];
    let pool = pool_of_two(&args).await?;
    let gw0 = pool.agent_pid("gw-0").context("no agent gw-0")?;
    Ok((pool, gw0))
}

/// Kills `victim` (`kill -9`) while `n` short streaming chats are in flight, once it holds
/// a third of them (more than its batch runs: some have no token yet) and the first tokens
/// are out (some have). Every request that had no token completes on the other agent; the
/// ones cut mid-stream end with an error event. Returns (completed, cut).
async fn kill_under_load(
    pool: &LocalPool,
    victim: &str,
    n: usize,
) -> anyhow::Result<(usize, usize)> {
    let pid = pool.agent_pid(victim).context("no victim")?;
    let retried = retries(pool);
    let clients = Clients::start(pool.addr, MODEL, n, 8);
    let third = (n / 3) as f64;
    // Debug builds on two shared cores are slow: generous limits.
    wait_until(Duration::from_secs(300), || async {
        let held = in_flight(pool, victim).unwrap_or(0.0) >= third;
        ((held && clients.streaming() > 0) || clients.any_ended()).then_some(())
    })
    .await?;
    LocalPool::signal(pid, "-KILL")?;
    let killed = std::time::Instant::now();
    let ejected = wait_until(Duration::from_secs(5), || async {
        (healthy(pool, victim) == Some(false)).then(|| killed.elapsed())
    })
    .await?;
    assert!(
        ejected < Duration::from_secs(1),
        "ejected after {ejected:?}"
    );
    let tally = clients.tally()?;
    assert_eq!(
        tally.lost,
        Vec::<String>::new(),
        "requests with no token yet were lost while an agent was alive ({} completed, {} cut)",
        tally.completed,
        tally.cut
    );
    assert_eq!(tally.completed + tally.cut, n);
    let moved = retries(pool) - retried;
    assert!(
        moved >= 1.0,
        "no request was moved off {victim}: kill it sooner"
    );
    eprintln!("killed {victim} under {n} streams: {tally:?}, {moved} retried on the other agent");
    inferpool_e2e::faults::row(
        &format!("agent SIGKILL under {n} streams ({victim})"),
        "no request without a token lost; cut ones end with an error event",
        &format!(
            "0 lost, {} completed, {} cut, {moved} moved; ejected after {ejected:?}",
            tally.completed, tally.cut
        ),
    );
    Ok((tally.completed, tally.cut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_agents_under_load_loses_no_request_that_had_no_token() -> anyhow::Result<()> {
    let _alone = UNDER_LOAD.lock().await;
    // Local mode gives each agent half of the two cores here, so after a kill the survivor
    // serves every stream at half the pool's speed, and in a debug build the last of 200
    // wait far longer than the default 10 s for a free agent (a 429, by design). What this
    // test checks is that the death itself loses nothing, so requests may wait minutes.
    let pool = pool_of_two(&["--queue-wait-seconds", "300"]).await?;
    let gw0 = pool.agent_pid("gw-0").context("no agent gw-0")?;
    kill_under_load(&pool, "gw-0", 60).await?;
    // Local mode restarts it; once the gateway readmits it, it is whole: the other agent's
    // death, under 200 streams, moves every request that had no token to it.
    pool.restarted("gw-0", gw0, Duration::from_secs(300))
        .await?;
    let gw1 = pool.agent_pid("gw-1").context("no agent gw-1")?;
    kill_under_load(&pool, "gw-1", 200).await?;
    pool.restarted("gw-1", gw1, Duration::from_secs(300))
        .await?;
    serves_then_stops(pool).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_with_sigterm_under_load_fails_no_request() -> anyhow::Result<()> {
    let _alone = UNDER_LOAD.lock().await;
    let (pool, gw0) = patient_pool().await?;
    let mut clients = Clients::start(pool.addr, MODEL, 30, 8);
    // Stop the agent while it holds requests, then send more: those go elsewhere.
    wait_until(Duration::from_secs(300), || async {
        (in_flight(&pool, "gw-0").unwrap_or(0.0) >= 4.0).then_some(())
    })
    .await?;
    LocalPool::signal(gw0, "-TERM")?;
    clients.extend(Clients::start(pool.addr, MODEL, 10, 8));
    let tally = clients.tally()?;
    assert_eq!(
        (tally.completed, tally.cut, tally.lost.len()),
        (40, 0, 0),
        "a drained agent finishes what it took: {tally:?}"
    );
    // Having finished, it exits at once (the gateway's links do not hold it), and the
    // gateway connects to its replacement, which then takes requests.
    wait_until(Duration::from_secs(10), || async {
        (!std::path::Path::new(&format!("/proc/{gw0}")).exists()).then_some(())
    })
    .await?;
    pool.restarted("gw-0", gw0, Duration::from_secs(300))
        .await?;
    let served_by_replacement = || {
        let addr = pool.agent_http("gw-0").ok()?;
        let (_, text) = inferpool_e2e::http::get(addr, "/metrics").ok()?;
        let key = "inferpool_agent_requests_total{endpoint=\"grpc_generate\",outcome=\"ok\"}";
        inferpool_e2e::http::metric(&text, key)
    };
    let tally = Clients::start(pool.addr, MODEL, 8, 4).tally()?;
    assert_eq!(tally.completed, 8, "{tally:?}");
    assert!(
        served_by_replacement().is_some_and(|n| n >= 1.0),
        "the replacement took none of 8 requests"
    );
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}

/// The agent's requests running and waiting (its `/metrics`).
fn agent_load(pool: &LocalPool, agent: &str) -> Option<(f64, f64)> {
    let text = pool.agent_metrics(agent).ok()?;
    let running = inferpool_e2e::http::metric(&text, "vllm:num_requests_running")?;
    let waiting = inferpool_e2e::http::metric(&text, "vllm:num_requests_waiting")?;
    Some((running, waiting))
}

/// The agent's `Generate` calls that ended because the gateway went away.
fn agent_cancelled(pool: &LocalPool, agent: &str) -> f64 {
    let key = "inferpool_agent_requests_total{endpoint=\"grpc_generate\",outcome=\"cancelled\"}";
    let text = pool.agent_metrics(agent).unwrap_or_default();
    inferpool_e2e::http::metric(&text, key).unwrap_or(0.0)
}

/// Two long streams that fill a batch of two, each open once its first token is out.
fn fill_batch(pool: &LocalPool) -> anyhow::Result<Vec<EventStream>> {
    // Counting on, greedily: it does not stop early.
    let long = json!({"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "temperature": 0,
        "max_tokens": 400, "stream": true});
    (0..2)
        .map(|_| EventStream::open(pool.addr, "/v1/completions", &long))
        .collect()
}

#[tokio::test]
async fn clients_that_leave_before_their_first_token_leave_nothing_in_flight() -> anyhow::Result<()>
{
    // One agent running two sequences: two long streams fill its batch, and of four more
    // streams two queue at the agent (the gateway sends each agent up to twice its batch)
    // and two wait in the gateway.
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {POOL}\n\
         spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 1\n  \
         batching:\n    maxBatchSize: 2\n"
    );
    let pool = LocalPool::start(&manifest, MODEL).await?;
    let agent = "gw-0";
    let running = fill_batch(&pool)?;
    let leaving: Vec<_> = (0..4)
        .map(|i| {
            let body = chat(
                &format!("Tell story {i}."),
                json!({"stream": true, "max_tokens": 8}),
            );
            send_request(pool.addr, "/v1/chat/completions", &body)
        })
        .collect::<anyhow::Result<_>>()?;
    wait_until(Duration::from_secs(120), || async {
        let queued = agent_load(&pool, agent).is_some_and(|(_, waiting)| waiting == 2.0);
        (queued && in_flight(&pool, agent) == Some(4.0)).then_some(())
    })
    .await?;
    for client in &leaving {
        assert!(!has_answer(client)?, "a leaving client had its first token");
    }
    drop(leaving);
    // The two on the agent give their slots back, and are cancelled there too.
    wait_until(Duration::from_secs(60), || async {
        let cancelled = agent_cancelled(&pool, agent) >= 2.0;
        (cancelled && in_flight(&pool, agent) == Some(2.0)).then_some(())
    })
    .await?;
    // Clients that leave mid-stream give theirs back as well.
    drop(running);
    wait_until(Duration::from_secs(60), || async {
        let idle = agent_load(&pool, agent) == Some((0.0, 0.0));
        (idle && in_flight(&pool, agent) == Some(0.0)).then_some(())
    })
    .await?;
    assert!(agent_cancelled(&pool, agent) >= 4.0);
    serves_then_stops(pool).await
}

#[tokio::test]
async fn a_saturated_pool_answers_429_and_loses_nothing() -> anyhow::Result<()> {
    // One agent that runs one sequence and queues one more; the gateway holds a request
    // one second for a free agent, then answers 429.
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: sat\n\
         spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 1\n  \
         batching:\n    maxBatchSize: 1\n    queueLimits: {{critical: 1, high: 1, normal: 1, low: 1}}\n"
    );
    let pool = LocalPool::start_with(&manifest, MODEL, &["--queue-wait-seconds", "1"]).await?;
    let addr = pool.addr;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let body = chat(
                    &format!("Write a long story {i}."),
                    json!({"max_tokens": 48}),
                );
                post_json(addr, "/v1/chat/completions", &body)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        let reply = client
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))?
            .map_err(|e| anyhow::anyhow!("{e}\n{}", pool.log_text()))?;
        match reply.status {
            200 => {
                assert!(
                    reply.json()?["usage"]["completion_tokens"]
                        .as_u64()
                        .is_some_and(|n| n > 0)
                );
                ok += 1;
            }
            429 => {
                assert!(reply.head.contains("retry-after: 1"), "{}", reply.head);
                // Saturated at the gateway, or (with a report not yet in) at the agent.
                let kind = reply.json()?["error"]["type"].clone();
                assert!(kind == "pool_saturated" || kind == "queue_full", "{kind}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}\n{}", reply.body, pool.log_text()),
        }
    }
    assert_eq!(ok + refused, 8, "every request got an answer");
    assert!(ok >= 1 && refused >= 1, "{ok} served, {refused} refused");
    serves_then_stops(pool).await
}

fn ask_through(pool: &LocalPool, body: &Value, headers: &[(&str, &str)]) -> anyhow::Result<String> {
    let reply = post(
        pool.addr,
        "/v1/chat/completions",
        headers,
        body.to_string().as_bytes(),
    )?;
    anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
    Ok(cache_header(&reply.head))
}

#[tokio::test]
async fn the_response_cache_answers_through_the_gateway_and_obeys_cache_control()
-> anyhow::Result<()> {
    let manifest = manifest("round_robin").replace("replicas: 2", "replicas: 1");
    let pool = LocalPool::start(&manifest, MODEL).await?;
    let body = chat("Name a fruit.", json!({"temperature": 0, "max_tokens": 8}));
    assert_eq!(
        ask_through(&pool, &body, &[("Cache-Control", "no-store")])?,
        "miss"
    );
    assert_eq!(
        ask_through(&pool, &body, &[])?,
        "miss",
        "no-store was not passed on"
    );
    assert_eq!(ask_through(&pool, &body, &[])?, "exact");
    assert_eq!(
        ask_through(&pool, &body, &[("Cache-Control", "no-cache")])?,
        "miss"
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let mut stream = EventStream::open(pool.addr, "/v1/chat/completions", &streamed)?;
    assert_eq!(cache_header(&stream.head), "exact");
    let no_cache = [("Cache-Control", "no-cache")];
    let mut fresh =
        EventStream::open_with(pool.addr, "/v1/chat/completions", &no_cache, &streamed)?;
    assert_eq!(
        cache_header(&fresh.head),
        "miss",
        "no-cache was not passed on to the stream"
    );
    let (hit, done) = stream.collect()?;
    let (generated, fresh_done) = fresh.collect()?;
    assert!(done && fresh_done);
    let text = |events: &[Value]| -> String {
        events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect()
    };
    assert_eq!(text(&hit), text(&generated));
    serves_then_stops(pool).await
}

#[tokio::test]
async fn a_local_agent_keeps_its_cache_across_restarts() -> anyhow::Result<()> {
    let name = format!("persist{}", std::process::id());
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {name}\nspec:\n  \
         model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 1\n  cache:\n    \
         persistence:\n      enabled: true\n"
    );
    let root = std::env::var_os("INFERPOOL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/inferpool")
        });
    let dir = root.join("local").join(format!("{name}-0"));
    let body = chat("Name a tree.", json!({"temperature": 0, "max_tokens": 8}));
    let pool = LocalPool::start(&manifest, MODEL).await?;
    assert_eq!(ask_through(&pool, &body, &[])?, "miss");
    assert_eq!(pool.stop().await?, Some(0));
    assert!(
        dir.join("response-cache.snapshot").is_file(),
        "no snapshot in {}",
        dir.display()
    );
    let pool = LocalPool::start(&manifest, MODEL).await?;
    let kind = ask_through(&pool, &body, &[]);
    let stopped = pool.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(kind?, "exact");
    assert_eq!(stopped?, Some(0));
    Ok(())
}
