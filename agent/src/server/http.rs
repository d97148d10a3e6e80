//! The OpenAI-compatible HTTP API, health and metrics (axum). Raw bodies become checked
//! `Valid*` requests here, once; every refusal is OpenAI's JSON error shape with a stable
//! `type` and its status.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inferpool_protocol::limits::MAX_BODY_BYTES;
use inferpool_protocol::openai::{
    ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Kind, ValidChatRequest,
    ValidCompletionRequest, ValidEmbeddingRequest,
};
use inferpool_protocol::priority::{PRIORITY_HEADER, parse_priority};
use serde::de::DeserializeOwned;

use super::deadline::{TIMEOUT_HEADER, deadline_of, millis};
use super::respond::{self, refuse};
use crate::cache::CacheDirectives;
use crate::cache::directives::CACHE_CONTROL;
use crate::generation::Priority;
use crate::serving::error::ServeError;
use crate::serving::record::Recorder;
use crate::serving::{Admission, Agent, Phase};

/// The agent's HTTP routes.
pub fn router(agent: Arc<Agent>) -> Router {
    let router = Router::new();
    #[cfg(feature = "fault-injection")]
    let router = router.route("/admin/faults", post(super::faults::inject));
    router
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .merge(health_routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(agent)
}

/// Health and metrics alone: the plain `--health-port` beside API ports that serve TLS,
/// for probes and scrapers that present no client certificate.
pub fn health_router(agent: Arc<Agent>) -> Router {
    health_routes()
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(agent)
}

fn health_routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ServeError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServeError::BodyTooLarge(MAX_BODY_BYTES)
        } else {
            ServeError::Json(rejection.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ServeError::Json(e.to_string()))
}

/// The queue `headers` ask for: priority and deadline.
fn admission(headers: &HeaderMap) -> Result<Admission, ServeError> {
    let timeout = headers
        .get(TIMEOUT_HEADER)
        .map(|v| v.to_str().unwrap_or_default());
    Ok(Admission {
        priority: priority(headers)?,
        deadline: deadline_of(TIMEOUT_HEADER, timeout, millis)?,
    })
}

/// What the request's `Cache-Control` allows the response cache.
fn directives(headers: &HeaderMap) -> CacheDirectives {
    match headers.get(CACHE_CONTROL).map(HeaderValue::to_str) {
        None => CacheDirectives::default(),
        Some(Ok(value)) => CacheDirectives::parse(Some(value)),
        // Unreadable: the strictest reading, since it might have said no-store.
        Some(Err(_)) => CacheDirectives::parse(Some("no-store")),
    }
}

/// The request's priority header (`normal` when absent).
pub fn priority(headers: &HeaderMap) -> Result<Priority, ServeError> {
    parse_priority(headers.get(PRIORITY_HEADER).map(HeaderValue::as_bytes))
        .map(Priority::from)
        .map_err(|e| ServeError::Json(e.to_string()))
}

/// Logs the caller's W3C trace context (the gateway passes its client's on), as `Generate`
/// does.
fn log_trace(headers: &HeaderMap, endpoint: &str) {
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        tracing::debug!(traceparent, endpoint, "request");
    }
}

async fn chat(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    log_trace(&headers, "chat");
    let mut recorder = Recorder::start(agent.clone(), "chat");
    let started = async {
        let req = ValidChatRequest::try_from(parse::<ChatCompletionRequest>(body)?)?;
        let (model, sampling) = (req.model.clone(), req.sampling.clone());
        let stream = agent
            .chat(req, admission(&headers)?, directives(&headers))
            .await?;
        Ok::<_, ServeError>((model, sampling, stream))
    };
    match started.await {
        Ok((model, sampling, stream)) => {
            let answer = respond::Answer::new(Kind::Chat, &agent, &model, &sampling);
            answer.respond(stream, recorder, None).await
        }
        Err(e) => refuse(&mut recorder, e),
    }
}

async fn completions(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    log_trace(&headers, "completion");
    let mut recorder = Recorder::start(agent.clone(), "completion");
    let started = async {
        let req = ValidCompletionRequest::try_from(parse::<CompletionRequest>(body)?)?;
        let (model, sampling) = (req.model.clone(), req.sampling.clone());
        let echo = req.echo.then(|| req.prompt.clone());
        let stream = agent
            .complete(req, admission(&headers)?, directives(&headers))
            .await?;
        Ok::<_, ServeError>((model, sampling, echo, stream))
    };
    match started.await {
        Ok((model, sampling, echo, stream)) => {
            let answer = respond::Answer::new(Kind::Completion, &agent, &model, &sampling);
            answer.respond(stream, recorder, echo).await
        }
        Err(e) => refuse(&mut recorder, e),
    }
}

async fn embeddings(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut recorder = Recorder::start(agent.clone(), "embedding");
    let result = async {
        let req = ValidEmbeddingRequest::try_from(parse::<EmbeddingRequest>(body)?)?;
        agent.embed(req, directives(&headers)).await
    };
    match result.await {
        Ok(response) => {
            recorder.outcome("ok");
            axum::Json(response).into_response()
        }
        Err(e) => refuse(&mut recorder, e),
    }
}

async fn models(State(agent): State<Arc<Agent>>) -> Response {
    axum::Json(agent.models()).into_response()
}

/// Liveness: failing only when no device can serve and each has failed its recoveries
/// `devices.restartAfterFailures` times in a row (a sticky CUDA error outlives the process's
/// retries; a new process clears it), so that the kubelet restarts the pod.
async fn healthz(State(agent): State<Arc<Agent>>) -> Response {
    match agent.needs_restart() {
        true => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no device recovers: restart",
        )
            .into_response(),
        false => "ok".into_response(),
    }
}

async fn readyz(State(agent): State<Arc<Agent>>) -> Response {
    match agent.phase() {
        Phase::Ready if !agent.serving() => {
            (StatusCode::SERVICE_UNAVAILABLE, "no healthy device").into_response()
        }
        Phase::Ready => (StatusCode::OK, "ready").into_response(),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response(),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response(),
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    agent.metrics.observe_load(&agent.load());
    agent.metrics.devices.observe(&agent.device_statuses());
    if let Some(stats) = agent.cache_stats() {
        agent.metrics.observe_cache(&stats);
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &agent.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
