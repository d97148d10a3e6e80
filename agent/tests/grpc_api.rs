//! The gateway-facing gRPC service of a real agent process: Generate, WatchLoad, Drain
//! and grpc.health.v1, on loopback.

use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::http::post_json;
use inferpool_protocol::agent::agent_client::AgentClient;
use inferpool_protocol::agent::generate_request::Prompt;
use inferpool_protocol::agent::{
    ChatMessage, ChatMessages, DrainRequest, ErrorInfo, FinishReason, GenerateRequest,
    SamplingParams, WatchLoadRequest,
};
use prost::Message as _;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(agent: &AgentProcess) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{}", agent.grpc))?
        .connect()
        .await?)
}

fn chat_request(model: &str, content: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        model: model.to_owned(),
        prompt: Some(Prompt::Chat(ChatMessages {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: content.into(),
            }],
        })),
        sampling: Some(SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(max_tokens),
            ..SamplingParams::default()
        }),
        ..GenerateRequest::default()
    }
}

async fn health(channel: &Channel) -> anyhow::Result<i32> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    Ok(HealthClient::new(channel.clone())
        .check(request)
        .await?
        .into_inner()
        .status)
}

#[tokio::test]
async fn generate_streams_the_same_answer_as_http_and_refuses_with_error_info() -> anyhow::Result<()>
{
    // Without the response cache: HTTP must generate the same answer itself. Without prefix
    // caching too: the second request would reuse the first's prompt blocks and prefill
    // only the rest, which rounds differently (within a chunked prefill's tolerance, see
    // tests/model.rs), and a near-tie may then fall the other way.
    let config =
        serde_json::json!({"cache": {"enabled": false}, "batching": {"prefixCaching": false}});
    let agent = AgentProcess::start(config).await?;
    let mut client = AgentClient::new(channel(&agent).await?);
    let mut stream = client
        .generate(chat_request(MODEL, "Name two planets.", 12))
        .await?
        .into_inner();
    let (mut text, mut tokens, mut last) = (String::new(), 0, None);
    while let Some(message) = stream.message().await? {
        text.push_str(&message.text);
        tokens += message.token_ids.len();
        last = Some(message);
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("empty stream"))?;
    let usage = last.usage.unwrap_or_default();
    assert!(last.finish.is_some());
    assert_eq!(
        usage.completion_tokens as usize,
        tokens + usize::from(last.finish() == FinishReason::Stop)
    );
    let http = post_json(
        agent.http,
        "/v1/chat/completions",
        &serde_json::json!({
        "model": MODEL, "messages": [{"role": "user", "content": "Name two planets."}],
        "temperature": 0, "max_tokens": 12}),
    )?
    .json()?;
    assert_eq!(
        http["choices"][0]["message"]["content"].as_str(),
        Some(text.as_str())
    );

    let refused = client
        .generate(chat_request("nope", "hi", 4))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let info = ErrorInfo::decode(refused.details())?;
    assert_eq!(info.r#type, "model_not_found");
    let too_many = chat_request(MODEL, "hi", 4);
    let mut bad = too_many.clone();
    bad.sampling = Some(SamplingParams {
        temperature: Some(5.0),
        ..SamplingParams::default()
    });
    let refused = client.generate(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        ErrorInfo::decode(refused.details())?.r#type,
        "invalid_request_error"
    );
    Ok(())
}

#[tokio::test]
async fn load_reports_follow_the_work_and_drain_flips_health() -> anyhow::Result<()> {
    let agent = AgentProcess::start(serde_json::json!({})).await?;
    let channel = channel(&agent).await?;
    let mut client = AgentClient::new(channel.clone());
    assert_eq!(health(&channel).await?, ServingStatus::Serving as i32);
    let mut reports = client.watch_load(WatchLoadRequest {}).await?.into_inner();
    let first = reports
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no report"))?;
    assert!(first.kv_blocks_total > 0 && first.max_batch_size > 0);
    assert_eq!(first.devices.len(), 1, "{first:?}");
    assert!(!first.draining);
    // Idle: heartbeats keep coming, about a second apart.
    let heartbeat = tokio::time::timeout(Duration::from_secs(3), reports.message()).await??;
    assert!(heartbeat.is_some_and(|r| r.uptime_ms > first.uptime_ms));
    // Busy: a report shows the running sequence and the blocks it holds.
    let mut generating = client
        .generate(chat_request(MODEL, "Write a long poem.", 200))
        .await?
        .into_inner();
    assert!(generating.message().await?.is_some());
    let busy = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = reports.message().await? {
            if r.running == 1 && r.kv_blocks_used > 0 {
                return Ok::<_, tonic::Status>(Some(r));
            }
        }
        Ok(None)
    })
    .await??;
    assert!(busy.is_some());
    let drained = client.drain(DrainRequest {}).await?.into_inner();
    assert_eq!(drained.in_flight, 1);
    assert_eq!(health(&channel).await?, ServingStatus::NotServing as i32);
    let draining = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(r) = reports.message().await? {
            if r.draining {
                return Ok::<_, tonic::Status>(true);
            }
        }
        Ok(false)
    })
    .await??;
    assert!(draining);
    let refused = client
        .generate(chat_request(MODEL, "hi", 4))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    // The in-flight generation still finishes.
    let mut finished = false;
    while let Some(m) = generating.message().await? {
        finished |= m.finish.is_some();
    }
    assert!(finished);
    Ok(())
}

#[tokio::test]
async fn sigterm_with_a_load_stream_open_exits_at_once() -> anyhow::Result<()> {
    let mut agent = AgentProcess::start(serde_json::json!({})).await?;
    let mut client = AgentClient::new(channel(&agent).await?);
    let mut reports = client.watch_load(WatchLoadRequest {}).await?.into_inner();
    assert!(reports.message().await?.is_some());
    // Nothing in flight: the drain is over at once, and the open load stream (which never
    // ends by itself) must not hold the exit. Before, each server waited out a 5 s bound.
    let asked = std::time::Instant::now();
    agent.terminate()?;
    let status = agent.exited(Duration::from_secs(30)).await?;
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    // The stream ended cleanly (its last report said draining), not by a reset.
    let mut last = None;
    while let Some(report) = reports.message().await? {
        last = Some(report.draining);
    }
    assert_eq!(last, Some(true));
    Ok(())
}
