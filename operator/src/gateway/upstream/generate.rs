//! `Generate` and `Embed` through tonic's client: the call carries the request's remaining
//! time (`grpc-timeout`, so the agent can drop work nobody waits for), and its answers come
//! as tonic decodes them.

use inferpool_protocol::agent::{EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use super::details::client;

/// An agent's answers to one `Generate` call.
#[derive(Debug)]
pub struct GenerateStream(Streaming<GenerateResponse>);

impl GenerateStream {
    /// The next answer; `None` once the agent ended the call with OK.
    pub async fn message(&mut self) -> Result<Option<GenerateResponse>, Status> {
        self.0.message().await
    }
}

/// `message` as a call that must end by `deadline`.
fn timed<T>(message: T, deadline: Instant) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// Calls `Generate`: the answers once the agent accepted, or its refusal.
pub async fn generate(
    channel: &Channel,
    request: GenerateRequest,
    deadline: Instant,
) -> Result<GenerateStream, Status> {
    let answers = client(channel.clone())
        .generate(timed(request, deadline))
        .await?;
    Ok(GenerateStream(answers.into_inner()))
}

/// Calls `Embed`.
pub async fn embed(
    channel: &Channel,
    request: EmbedRequest,
    deadline: Instant,
) -> Result<EmbedResponse, Status> {
    let answer = client(channel.clone())
        .embed(timed(request, deadline))
        .await?;
    Ok(answer.into_inner())
}
