//! The gateway's `Agent` gRPC service (tonic): `Generate` with the HTTP API's validation
//! and error types (carried as `ErrorInfo` details), `WatchLoad` reports, and `Drain`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, Stream};
use inferpool_protocol::agent::agent_server::Agent as AgentService;
use inferpool_protocol::agent::generate_request::Prompt;
use inferpool_protocol::agent::{
    self as pb, DrainRequest, DrainResponse, EmbedRequest, EmbedResponse, ErrorInfo,
    GenerateRequest, GenerateResponse, LoadReport, WatchLoadRequest,
};
use inferpool_protocol::errors::code_for_status;
use inferpool_protocol::openai::{
    ChatCompletionRequest, CompletionRequest, EmbeddingInput, EmbeddingRequest, Message,
    SamplingFields, Stop, ValidChatRequest, ValidCompletionRequest, ValidEmbeddingRequest, Vector,
};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::deadline::{deadline_of, grpc_timeout};
use crate::cache::{CacheDirectives, CacheStats};
use crate::generation::FinishReason;
use crate::replicas::DeviceStatus;
use crate::scheduler::batcher::Load;
use crate::serving::error::ServeError;
use crate::serving::record::Recorder;
use crate::serving::text::{TextEvent, TextStream};
use crate::serving::{Admission, Agent, Phase};

/// Load reports are sent at most this often...
pub const REPORT_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// ...and at least this often.
pub const REPORT_HEARTBEAT: Duration = Duration::from_secs(1);

/// The `Agent` service over the serving core.
#[derive(Debug, Clone)]
pub struct GrpcAgent {
    agent: Arc<Agent>,
    health: HealthReporter,
    stopped: watch::Receiver<bool>,
}

impl GrpcAgent {
    /// Serves `agent`; `health` is its grpc.health.v1 status. Load-report streams end when
    /// `stopped` turns true: they never end on their own, and a server shutting down
    /// gracefully waits for every open stream, so without this a connected gateway would
    /// hold a drained agent up until its grace period ran out.
    pub fn new(agent: Arc<Agent>, health: HealthReporter, stopped: watch::Receiver<bool>) -> Self {
        Self {
            agent,
            health,
            stopped,
        }
    }
}

/// Sets the grpc.health.v1 status of the server and of the `Agent` service.
pub async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status("inferpool.agent.v1.Agent", status)
        .await;
}

/// A refusal as a gRPC status with an `ErrorInfo` detail: its HTTP status's code (the
/// gateway reads the same status back from it), `Internal` for the agent's own failures.
pub fn status(e: &ServeError) -> Status {
    let code = code_for_status(e.status()).unwrap_or(Code::Internal);
    let info = ErrorInfo {
        r#type: e.error_type().to_owned(),
        message: e.to_string(),
    };
    Status::with_details(code, e.to_string(), info.encode_to_vec().into())
}

type GenerateStream = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for GrpcAgent {
    type GenerateStream = GenerateStream;
    type WatchLoadStream = ReceiverStream<Result<LoadReport, Status>>;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<GenerateStream>, Status> {
        let mut recorder = Recorder::start(self.agent.clone(), "grpc_generate");
        let timeout = request.metadata().get("grpc-timeout");
        let deadline = deadline_of(
            "grpc-timeout",
            timeout.and_then(|v| v.to_str().ok()),
            grpc_timeout,
        );
        let started = match deadline {
            Ok(deadline) => self.start(request.into_inner(), deadline).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(text) => Ok(Response::new(Box::pin(responses(text, recorder)))),
            Err(e) => {
                recorder.outcome(e.error_type());
                Err(status(&e))
            }
        }
    }

    async fn watch_load(
        &self,
        _: Request<WatchLoadRequest>,
    ) -> Result<Response<Self::WatchLoadStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(report_loop(self.agent.clone(), tx, self.stopped.clone()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let mut recorder = Recorder::start(self.agent.clone(), "grpc_embed");
        match self.embed_texts(request.into_inner()).await {
            Ok(response) => {
                recorder.outcome("ok");
                Ok(Response::new(response))
            }
            Err(e) => {
                recorder.outcome(e.error_type());
                Err(status(&e))
            }
        }
    }

    async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        self.agent.drain();
        // Health says so before the answer, not when the phase watcher next runs (on
        // another thread): a caller that drains and then asks sees NOT_SERVING.
        set_health(&self.health, ServingStatus::NotServing).await;
        let in_flight = u32::try_from(self.agent.in_flight.count()).unwrap_or(u32::MAX);
        Ok(Response::new(DrainResponse { in_flight }))
    }
}

impl GrpcAgent {
    /// `Embed`: the HTTP API's checks, vectors as plain floats (the gateway encodes them).
    async fn embed_texts(&self, req: EmbedRequest) -> Result<EmbedResponse, ServeError> {
        let directives = directives(&req.cache_control);
        let raw = EmbeddingRequest {
            model: req.model,
            input: EmbeddingInput::Many(req.inputs),
            encoding_format: None,
        };
        let embedded = self
            .agent
            .embed(ValidEmbeddingRequest::try_from(raw)?, directives)
            .await?;
        let embeddings = embedded
            .data
            .into_iter()
            .map(|e| match e.embedding {
                Vector::Float(values) => pb::Vector { values },
                Vector::Base64(_) => pb::Vector::default(),
            })
            .collect();
        Ok(EmbedResponse {
            embeddings,
            prompt_tokens: embedded.usage.prompt_tokens,
        })
    }

    async fn start(
        &self,
        req: GenerateRequest,
        deadline: Option<std::time::Instant>,
    ) -> Result<TextStream, ServeError> {
        if !req.traceparent.is_empty() {
            tracing::debug!(traceparent = %req.traceparent, model = %req.model, "generate");
        }
        let admission = Admission {
            priority: req.priority().into(),
            deadline,
        };
        let sampling = sampling_fields(req.sampling.unwrap_or_default());
        let cache = directives(&req.cache_control);
        match req.prompt {
            Some(Prompt::Chat(chat)) => {
                let messages = chat
                    .messages
                    .into_iter()
                    .map(|m| Message {
                        role: m.role,
                        content: m.content,
                    })
                    .collect();
                let raw = ChatCompletionRequest {
                    model: req.model,
                    messages,
                    sampling,
                };
                self.agent
                    .chat(ValidChatRequest::try_from(raw)?, admission, cache)
                    .await
            }
            Some(Prompt::Text(text)) => {
                let raw = CompletionRequest {
                    model: req.model,
                    prompt: inferpool_protocol::openai::Prompt::One(text),
                    echo: false,
                    logprobs: None,
                    sampling,
                };
                self.agent
                    .complete(ValidCompletionRequest::try_from(raw)?, admission, cache)
                    .await
            }
            None => Err(ServeError::Json(
                "a prompt (text or chat) is required".into(),
            )),
        }
    }
}

/// A forwarded `Cache-Control` value (empty: none).
fn directives(cache_control: &str) -> CacheDirectives {
    CacheDirectives::parse(Some(cache_control).filter(|v| !v.is_empty()))
}

fn sampling_fields(s: pb::SamplingParams) -> SamplingFields {
    SamplingFields {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        seed: s.seed,
        max_tokens: s.max_tokens,
        stop: (!s.stop.is_empty()).then_some(Stop::Many(s.stop)),
        presence_penalty: Some(s.presence_penalty),
        frequency_penalty: Some(s.frequency_penalty),
        stream: true,
        ..SamplingFields::default()
    }
}

/// The stream of a request's messages: everything already decoded goes into one message
/// (text and token ids merged, and the finish with its usage when it is there too), so a
/// cached or one-token answer is a single message, and a busy stream sends fewer frames.
fn responses(
    text: TextStream,
    mut recorder: Recorder,
) -> impl Stream<Item = Result<GenerateResponse, Status>> {
    let cache = text.cache_outcome().map(|o| o.name().to_owned());
    if text.cached() {
        recorder.replayed();
    }
    let state = Responses {
        text,
        recorder,
        failure: None,
        ended: false,
        cache,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.next_message().await?;
        Some((item, s))
    })
}

struct Responses {
    text: TextStream,
    recorder: Recorder,
    /// An error to send after the text that came before it.
    failure: Option<Status>,
    ended: bool,
    /// How the cache took part, sent with the first message.
    cache: Option<String>,
}

impl Responses {
    async fn next_message(&mut self) -> Option<Result<GenerateResponse, Status>> {
        if let Some(failure) = self.failure.take() {
            return Some(Err(failure));
        }
        if self.ended {
            return None;
        }
        let mut message = GenerateResponse {
            cache: self.cache.take().unwrap_or_default(),
            ..GenerateResponse::default()
        };
        let mut event = self.text.next().await;
        loop {
            if let Err(e) = self.merge(&mut message, event) {
                self.ended = true;
                if message.text.is_empty() && message.token_ids.is_empty() {
                    return Some(Err(e));
                }
                self.failure = Some(e);
                return Some(Ok(message));
            }
            if self.ended {
                return Some(Ok(message));
            }
            // Merge whatever else is already decoded; `next` is cancel-safe.
            match self.text.next().now_or_never() {
                Some(more) => event = more,
                None => return Some(Ok(message)),
            }
        }
    }

    /// Adds `event` to `message`; the end sets its finish, a failure is returned.
    fn merge(
        &mut self,
        message: &mut GenerateResponse,
        event: Option<TextEvent>,
    ) -> Result<(), Status> {
        let failed = match event {
            Some(TextEvent::Text { text, token_ids }) => {
                self.recorder.tokens(token_ids.len());
                message.text.push_str(&text);
                message.token_ids.extend(token_ids);
                return Ok(());
            }
            Some(TextEvent::Done { finish, usage }) => {
                self.recorder.outcome("ok");
                let end = finished(finish, usage, self.text.cached());
                message.finish = end.finish;
                message.usage = end.usage;
                self.ended = true;
                return Ok(());
            }
            Some(TextEvent::Failed(failure)) => failure.into_error(),
            None => ServeError::Engine("the generation ended without a result".into()),
        };
        self.recorder.outcome(failed.error_type());
        Err(status(&failed))
    }
}

fn finished(
    finish: FinishReason,
    usage: inferpool_protocol::openai::Usage,
    cached: bool,
) -> GenerateResponse {
    let finish = match finish {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
    };
    GenerateResponse {
        finish: Some(finish.into()),
        usage: Some(pb::Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cached,
        }),
        ..GenerateResponse::default()
    }
}

/// Sends a report now, then on every change of load or phase (at most every
/// `REPORT_MIN_INTERVAL`) and at least every `REPORT_HEARTBEAT`, until the client leaves or
/// the agent stops; then one last report (draining) and the stream ends.
async fn report_loop(
    agent: Arc<Agent>,
    tx: mpsc::Sender<Result<LoadReport, Status>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut phase = agent.watch_phase();
    let mut load = agent.watch_load();
    let mut last = false;
    loop {
        if load.is_none() {
            load = agent.watch_load();
        }
        let cache = agent.cache_stats();
        let report = load_report(&agent, load.as_mut().map(|l| *l.borrow_and_update()), cache);
        if tx.send(Ok(report)).await.is_err() || last {
            return;
        }
        tokio::time::sleep(REPORT_MIN_INTERVAL).await;
        tokio::select! {
            () = changed(&mut load) => {}
            _ = phase.changed() => {}
            () = tokio::time::sleep(REPORT_HEARTBEAT - REPORT_MIN_INTERVAL) => {}
            () = tx.closed() => return,
            _ = stopped.wait_for(|s| *s) => last = true,
        }
    }
}

async fn changed(load: &mut Option<watch::Receiver<Load>>) {
    let alive = match load {
        Some(rx) => rx.changed().await.is_ok(),
        None => false,
    };
    if !alive {
        std::future::pending::<()>().await;
    }
}

fn load_report(agent: &Agent, load: Option<Load>, cache: Option<CacheStats>) -> LoadReport {
    let load = load.unwrap_or_default();
    let [critical, high, normal, low] = load.queued.map(count);
    LoadReport {
        queued: Some(pb::QueueDepth {
            critical,
            high,
            normal,
            low,
        }),
        running: count(load.running),
        // Every replica that can serve has a batch of its own.
        max_batch_size: count(agent.batch_slots()),
        kv_blocks_used: count(load.kv_blocks_used),
        kv_blocks_total: count(load.kv_blocks_total),
        cache: cache.map(|c| pb::CacheStats {
            entries: c.entries,
            bytes: c.bytes,
            hits: c.hits(),
            misses: c.misses,
            semantic_hits: c.semantic_hits,
            hit_ratio: c.hit_ratio(),
        }),
        devices: devices(agent),
        draining: agent.phase() == Phase::Draining,
        uptime_ms: agent.uptime_ms(),
        embedding_model: agent.embedding_model().unwrap_or_default(),
        prefix_cache: Some(pb::PrefixCacheStats {
            queried_tokens: load.prefix.queried_tokens,
            hit_tokens: load.prefix.hit_tokens,
            cached_blocks: count(load.prefix.cached_blocks),
        }),
    }
}

fn devices(agent: &Agent) -> Vec<pb::Device> {
    agent.device_statuses().iter().map(device).collect()
}

fn device(s: &DeviceStatus) -> pb::Device {
    use crate::gpu::DeviceKind;
    use crate::gpu::health::HealthState;
    let health = match s.health {
        HealthState::Healthy => pb::DeviceHealth::Healthy,
        HealthState::Degraded => pb::DeviceHealth::Degraded,
        HealthState::Failed => pb::DeviceHealth::Failed,
        HealthState::Recovering => pb::DeviceHealth::Recovering,
    };
    let t = s.telemetry.as_ref();
    pb::Device {
        kind: match s.device.kind {
            DeviceKind::Cpu => pb::DeviceKind::Cpu,
            DeviceKind::Cuda => pb::DeviceKind::Cuda,
        }
        .into(),
        name: s.device.name.clone(),
        ordinal: s.device.ordinal,
        memory_total_bytes: s.device.memory_total_bytes,
        memory_used_bytes: s.memory.weights + s.memory.kv,
        healthy: s.health.schedulable(),
        health: health.into(),
        health_reason: s.reason.clone().unwrap_or_default(),
        pool_budget_bytes: s.memory.budget,
        pool_free_bytes: s.memory.free,
        fragmentation: s.memory.fragmentation,
        replicas: count(s.replicas),
        temperature_c: t.and_then(|t| t.temperature_c),
        utilization_percent: t.and_then(|t| t.utilization_percent),
        power_watts: t.and_then(|t| t.power_watts),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
