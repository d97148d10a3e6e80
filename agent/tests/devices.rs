//! Device faults end to end on the CPU, with real agent processes built with the
//! `fault-injection` feature: two CPU devices (two engines) in one agent; a failure
//! injected on one; its unstarted requests finish on the other and none is lost; the
//! health shows in metrics and readiness; the device comes back after its backoff.

use std::net::SocketAddr;
use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::http::{get, metric, post_json};
use inferpool_e2e::streams::Clients;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(60);
const BATCH: usize = 2;

async fn two_device_agent(retry_seconds: f64) -> anyhow::Result<AgentProcess> {
    AgentProcess::start(json!({
        "devices": {"cpuDevices": 2, "health": {"retrySeconds": retry_seconds}},
        "batching": {"maxBatchSize": BATCH},
    }))
    .await
}

fn device_metric(agent: &AgentProcess, name: &str, labels: &str) -> Option<f64> {
    let text = agent.metrics().ok()?;
    metric(&text, &format!("inferpool_agent_{name}{{{labels}}}"))
}

fn state_is(agent: &AgentProcess, device: &str, state: &str) -> bool {
    let labels = format!("device=\"{device}\",state=\"{state}\"");
    device_metric(agent, "device_health", &labels) == Some(1.0)
}

fn replicas_on(agent: &AgentProcess, device: &str) -> Option<f64> {
    device_metric(agent, "device_replicas", &format!("device=\"{device}\""))
}

fn chat(addr: SocketAddr) -> anyhow::Result<(u16, Value)> {
    let body = json!({"model": MODEL, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hi."}]});
    let reply = post_json(addr, "/v1/chat/completions", &body)?;
    Ok((reply.status, reply.json()?))
}

async fn until(what: &str, check: impl FnMut() -> bool) -> anyhow::Result<()> {
    inferpool_e2e::wait::until(what, LIMIT, check).await
}

#[tokio::test]
async fn a_failed_device_loses_no_unstarted_request_and_comes_back() -> anyhow::Result<()> {
    let agent = two_device_agent(2.0).await?;
    assert_eq!(replicas_on(&agent, "cpu:0"), Some(1.0));
    assert_eq!(replicas_on(&agent, "cpu:1"), Some(1.0));
    // Twelve streams over two engines of two slots each: both have a queue.
    let clients = Clients::start(agent.http, MODEL, 12, 48);
    until("requests queued on both engines", || {
        let text = agent.metrics().unwrap_or_default();
        metric(&text, "vllm:num_requests_waiting").is_some_and(|w| w >= 6.0)
    })
    .await?;
    agent.inject(&json!({"device": 1, "stepErrors": 1}))?;
    let injected = std::time::Instant::now();
    // A stand-in replica for cpu:1 is loaded where there is room, beside cpu:0's own.
    until("a stand-in on cpu:0", || {
        state_is(&agent, "cpu:1", "failed") && replicas_on(&agent, "cpu:0") == Some(2.0)
    })
    .await?;
    eprintln!("stand-in serving {:?} after the fault", injected.elapsed());
    // After the backoff, while the streams go on, the device is retried with a replica of
    // its own, and the stand-in that replaced it on cpu:0 is retired.
    until("cpu:1 healthy with its own replica", || {
        state_is(&agent, "cpu:1", "healthy")
            && replicas_on(&agent, "cpu:1") == Some(1.0)
            && replicas_on(&agent, "cpu:0") == Some(1.0)
    })
    .await?;
    eprintln!(
        "cpu:1 back {:?} after the fault (2 s backoff)",
        injected.elapsed()
    );
    let tally = clients.tally()?;
    eprintln!("after the fault: {tally:?}");
    // Only requests that had streamed tokens on the failed device may end in an error;
    // every other one (queued there, or mid-prompt) finishes on another replica.
    assert!(tally.lost.is_empty(), "lost: {:?}", tally.lost);
    assert!(
        tally.cut <= BATCH,
        "{} cut, more than device 1 ran",
        tally.cut
    );
    assert_eq!(tally.completed + tally.cut, 12);
    assert_eq!(
        device_metric(&agent, "device_failures", "device=\"cpu:1\""),
        Some(1.0)
    );
    // Its queue was handed back and run elsewhere.
    let moved = device_metric(&agent, "device_requests_moved_total", "device=\"cpu:1\"");
    assert!(moved.is_some_and(|m| m >= 1.0), "moved: {moved:?}");
    assert_eq!(chat(agent.http)?.0, 200);
    Ok(())
}

#[tokio::test]
async fn a_panic_in_the_engine_moves_the_request_to_the_other_device() -> anyhow::Result<()> {
    let agent = two_device_agent(60.0).await?;
    // An idle pool routes to its first replica, on cpu:0, whose engine panics in its first
    // step; the request has streamed nothing, so it runs again on cpu:1 and succeeds.
    agent.inject(&json!({"device": 0, "stepPanics": 1}))?;
    let (status, body) = chat(agent.http)?;
    assert_eq!(status, 200, "{body}");
    assert!(body["choices"][0]["message"]["content"].is_string());
    assert!(state_is(&agent, "cpu:0", "failed"));
    assert!(state_is(&agent, "cpu:1", "healthy"));
    Ok(())
}

#[tokio::test]
async fn an_agent_with_no_healthy_device_is_not_ready_until_one_recovers() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({
        "devices": {"cpuDevices": 1, "health": {"retrySeconds": 3}},
    }))
    .await?;
    agent.inject(&json!({"device": 0, "stepErrors": 1}))?;
    // The request was moved off the failed device, found none healthy, and says so with a
    // retryable error instead of hanging.
    let (status, body) = chat(agent.http)?;
    assert!(status >= 500, "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("healthy")),
        "{body}"
    );
    // Within the 3 s backoff: failed, and not ready.
    assert_eq!(
        get(agent.http, "/readyz")?,
        (503, "no healthy device".to_owned())
    );
    assert!(state_is(&agent, "cpu:0", "failed"));
    until("cpu:0 recovered and ready", || {
        state_is(&agent, "cpu:0", "healthy") && matches!(get(agent.http, "/readyz"), Ok((200, _)))
    })
    .await?;
    assert_eq!(chat(agent.http)?.0, 200);
    assert_eq!(get(agent.http, "/healthz")?.0, 200, "alive all along");
    Ok(())
}

#[tokio::test]
async fn a_device_that_never_recovers_fails_liveness_so_the_pod_restarts() -> anyhow::Result<()> {
    let agent = AgentProcess::start(json!({
        "devices": {"cpuDevices": 1, "restartAfterFailures": 3,
            "health": {"retrySeconds": 0.2, "maxRetrySeconds": 0.4}},
    }))
    .await?;
    // The first step fails, then every recovery's warm-up: failures in a row pile up.
    agent.inject(&json!({"device": 0, "stepErrors": 1000}))?;
    assert!(chat(agent.http)?.0 >= 500);
    until("liveness failing after three failures", || {
        matches!(get(agent.http, "/healthz"), Ok((503, _)))
    })
    .await?;
    let failures = device_metric(&agent, "device_failures", "device=\"cpu:0\"");
    assert!(failures.is_some_and(|f| f >= 3.0), "{failures:?}");
    Ok(())
}

#[tokio::test]
async fn nvml_readings_degrade_and_fail_a_device() -> anyhow::Result<()> {
    let agent = two_device_agent(1.0).await?;
    let reading =
        |temperature: u32| json!({"device": 1, "reading": {"temperature_c": temperature}});
    agent.inject(&reading(90))?;
    until("cpu:1 degraded", || state_is(&agent, "cpu:1", "degraded")).await?;
    let temperature = device_metric(&agent, "gpu_temperature_celsius", "device=\"cpu:1\"");
    assert_eq!(
        temperature,
        Some(90.0),
        "the reading shows in the gpu gauges"
    );
    agent.inject(&reading(99))?;
    until("cpu:1 failed", || state_is(&agent, "cpu:1", "failed")).await?;
    until("cpu:1 evacuated", || {
        replicas_on(&agent, "cpu:1") == Some(0.0)
    })
    .await?;
    assert_eq!(chat(agent.http)?.0, 200, "the other device serves");
    agent.inject(&reading(50))?;
    until("cpu:1 back", || {
        state_is(&agent, "cpu:1", "healthy") && replicas_on(&agent, "cpu:1") == Some(1.0)
    })
    .await?;
    // Uncorrected ECC errors counted at the first reading are old news; one more fails the
    // device; once no more come, it is retried and comes back.
    let ecc = |count: u64| json!({"device": 0, "reading": {"ecc_uncorrected": count}});
    agent.inject(&ecc(2))?;
    agent.inject(&ecc(3))?;
    until("cpu:0 failed on a new ECC error", || {
        state_is(&agent, "cpu:0", "failed")
    })
    .await?;
    agent.inject(&ecc(3))?;
    until("cpu:0 back after the errors stopped", || {
        state_is(&agent, "cpu:0", "healthy") && replicas_on(&agent, "cpu:0") == Some(1.0)
    })
    .await?;
    Ok(())
}
