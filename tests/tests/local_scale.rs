//! Local mode scales a pool with `autoscaling` by starting and stopping real agent
//! processes: from zero on the first held request, back to zero after the scale-down
//! delay, and to three agents in one decision for a burst of three. A stream held for a
//! pool at zero gets SSE heartbeats until its deadline, then a retryable error event.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use inferpool_e2e::http::{EventStream, get, post_json};
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::wait::until;
use serde_json::json;

const MODEL: &str = "smollm2-scaled";
const POOL: &str = "gw";

/// One sequence per agent at a target of 1.0: each request in flight needs an agent.
fn manifest() -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {POOL}\n\
         spec:\n  model:\n    source: bundled\n    servedName: {MODEL}\n  batching:\n    \
         maxBatchSize: 1\n  autoscaling:\n    minReplicas: 0\n    maxReplicas: 3\n    \
         targetLoad: 1.0\n    scaleDownDelaySeconds: 2\n"
    )
}

/// A chat through the gateway, answered (or not) on a blocking thread: its status.
async fn chat(addr: SocketAddr, content: &str) -> anyhow::Result<u16> {
    let body = json!({"model": MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": content}]});
    let reply = tokio::task::spawn_blocking(move || post_json(addr, "/v1/chat/completions", &body))
        .await??;
    Ok(reply.status)
}

fn logged(pool: &LocalPool, line: &str) -> bool {
    pool.log_text().contains(line)
}

#[tokio::test]
async fn an_autoscaled_local_pool_starts_agents_for_requests_and_stops_them_when_idle()
-> anyhow::Result<()> {
    let pool = LocalPool::start_probed(&manifest(), &[], |addr| {
        get(addr, "/metrics").is_ok_and(|(code, _)| code == 200)
    })
    .await?;
    assert!(pool.agent_pids().is_empty(), "min 0: no agent at first");

    // 0 -> 1: the request is held until the agent the scaler starts for it is ready.
    let asked = Instant::now();
    assert_eq!(chat(pool.addr, "hi").await?, 200, "{}", pool.log_text());
    let up = asked.elapsed();
    assert!(
        logged(&pool, "autoscale gw: 0 -> 1 agents (ScaledUp, needed 1)"),
        "{}",
        pool.log_text()
    );
    eprintln!("0 -> 1: answered {up:?} after the request");

    // 1 -> 0: idle for the delay, the agent is stopped and its process exits.
    let answered = Instant::now();
    let limit = Duration::from_secs(60);
    until("the idle pool scales to zero", limit, || {
        pool.agent_pids().is_empty() && logged(&pool, "autoscale gw: 1 -> 0 agents (ScaledDown")
    })
    .await?;
    eprintln!(
        "1 -> 0: no agent process {:?} after the answer",
        answered.elapsed()
    );

    // A burst of three held requests: one decision of three agents, started side by side.
    let burst = Instant::now();
    let replies = ["a", "b", "c"].map(|content| tokio::spawn(chat(pool.addr, content)));
    for reply in replies {
        assert_eq!(reply.await??, 200, "{}", pool.log_text());
    }
    assert!(
        logged(&pool, "autoscale gw: 0 -> 3 agents (ScaledUp, needed 3)"),
        "{}",
        pool.log_text()
    );
    eprintln!(
        "0 -> 3: all three answered {:?} after the burst",
        burst.elapsed()
    );
    until("the burst's agents stop", limit, || {
        pool.agent_pids().is_empty()
    })
    .await?;
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}

/// A pool at zero that nothing scales: a request to it is held until its deadline.
fn unscaled_manifest() -> String {
    "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: idle\nspec:\n  \
     model:\n    source: bundled\n    servedName: smollm2-idle\n  replicas: 0\n  routing:\n    \
     requestTimeoutSeconds: 12\n"
        .to_owned()
}

/// Every line of a streamed chat to `model`, with when it arrived after the request.
fn stream_lines(
    addr: SocketAddr,
    model: &str,
) -> anyhow::Result<(EventStream, Vec<(Duration, String)>)> {
    let body = json!({"model": model, "stream": true, "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}]});
    let sent = Instant::now();
    let mut stream = EventStream::open(addr, "/v1/chat/completions", &body)?;
    let mut lines = Vec::new();
    while let Some(line) = stream.next_line()? {
        lines.push((sent.elapsed(), line));
    }
    Ok((stream, lines))
}

#[tokio::test]
async fn a_held_stream_gets_heartbeats_until_its_deadline_then_a_retryable_error()
-> anyhow::Result<()> {
    let pool = LocalPool::start_probed(&unscaled_manifest(), &[], |addr| {
        get(addr, "/metrics").is_ok_and(|(code, _)| code == 200)
    })
    .await?;
    let addr = pool.addr;
    let (stream, lines) =
        tokio::task::spawn_blocking(move || stream_lines(addr, "smollm2-idle")).await??;
    assert_eq!(stream.status, 200, "{lines:?}");
    assert!(stream.head.contains("text/event-stream"), "{}", stream.head);

    // An SSE comment after 5 s of silence and every 5 s after it, up to the 12 s deadline.
    let beats: Vec<Duration> = lines
        .iter()
        .filter(|(_, l)| l.starts_with(": "))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(beats.len(), 2, "{lines:?}");
    assert!(beats[0] >= Duration::from_millis(4900), "{beats:?}");
    assert!(
        beats[1] - beats[0] >= Duration::from_millis(4900),
        "{beats:?}"
    );

    // Then the retryable error as the stream's last event, and its end.
    let data: Vec<&(Duration, String)> = lines
        .iter()
        .filter(|(_, l)| l.starts_with("data: "))
        .collect();
    assert_eq!(data.len(), 2, "{lines:?}");
    let error: serde_json::Value = serde_json::from_str(&data[0].1["data: ".len()..])?;
    assert_eq!(error["error"]["type"], "pool_scaling", "{error}");
    assert!(
        data[0].0 >= Duration::from_secs(12),
        "not before the deadline: {data:?}"
    );
    assert_eq!(data[1].1, "data: [DONE]");
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}
