//! The gateway's agent hop alone: cached `Generate` calls straight to an agent's gRPC
//! port over the gateway's own channel and client code.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use inferpool_operator::gateway::upstream::channel::{UpstreamSettings, agent_channel};
use inferpool_operator::gateway::upstream::generate::generate;
use inferpool_protocol::agent as pb;

/// Latencies of `n` cached `Generate` calls straight to an agent's gRPC port, one at a
/// time over one channel, as the gateway sends streamed requests: that agent hop alone
/// (whole answers, as this benchmark asks for, go to the agent's HTTP port).
pub fn grpc_latencies(addr: SocketAddr, model: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = agent_channel(addr, &UpstreamSettings::default())?;
        let request = generate_request(model);
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + 50 {
            let start = Instant::now();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut stream = generate(&channel, request.clone(), deadline).await?;
            while stream.message().await?.is_some() {}
            // The first 50 warm up the connection and fill the agent's cache.
            if i >= 50 {
                samples.push(start.elapsed());
            }
        }
        samples.sort_unstable();
        Ok(samples)
    })
}

/// The cached workload's request as the gateway sends it.
fn generate_request(model: &str) -> pb::GenerateRequest {
    let message = pb::ChatMessage {
        role: "user".into(),
        content: "Say yes.".into(),
    };
    pb::GenerateRequest {
        model: model.into(),
        prompt: Some(pb::generate_request::Prompt::Chat(pb::ChatMessages {
            messages: vec![message],
        })),
        sampling: Some(pb::SamplingParams {
            temperature: Some(0.0),
            max_tokens: Some(1),
            ..pb::SamplingParams::default()
        }),
        ..pb::GenerateRequest::default()
    }
}
