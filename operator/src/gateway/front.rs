//! The gateway's OpenAI front door (axum): `model` selects the pool; requests are checked
//! here (malformed ones never reach an agent), forwarded over gRPC, and answered in the
//! same shape as the agents' own API, streaming token by token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inferpool_protocol::agent as pb;
use inferpool_protocol::openai::{
    ChatCompletionRequest, CompletionRequest, ErrorBody, Kind, Message, ModelList, ResponseShape,
    ValidChatRequest, ValidCompletionRequest, ValidSampling,
};
use serde::de::DeserializeOwned;

use super::agents::Pool;
use super::forward::{ForwardError, ForwardSettings, Forwarded, forward};
use super::metrics::{GatewayMetrics, PoolMetrics};
use super::pick::RequestKey;
use super::relay::{Relay, relay};
use super::retry::RetryBudget;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The priority header, passed on to the agent.
pub const PRIORITY_HEADER: &str = "x-inferpool-priority";
/// How much of the prompt keys prefix affinity.
const PREFIX_BYTES: usize = 256;

/// One pool behind the gateway.
#[derive(Debug)]
pub struct PoolRoute {
    /// The InferencePool's name (its metrics' `pool` label).
    pub name: String,
    /// Its agents.
    pub pool: Arc<Pool>,
    /// Its retry budget.
    pub budget: RetryBudget,
    /// Retries and queueing.
    pub forward: ForwardSettings,
    /// Longest a request may take.
    pub timeout: Duration,
    /// The session header for session affinity.
    pub session_header: String,
    /// Its metrics.
    pub metrics: PoolMetrics,
}

/// The gateway: pools by served model name.
#[derive(Debug, Default)]
pub struct Gateway {
    routes: RwLock<HashMap<String, Arc<PoolRoute>>>,
    pub(super) created: u64,
    /// The gateway's metrics.
    pub metrics: Arc<GatewayMetrics>,
}

impl Gateway {
    /// A gateway with no pools.
    pub fn new() -> Arc<Self> {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Arc::new(Self {
            routes: RwLock::default(),
            created,
            metrics: Arc::default(),
        })
    }

    /// Serves `route` under its pool's model name.
    pub fn set_route(&self, route: Arc<PoolRoute>) {
        if let Ok(mut routes) = self.routes.write() {
            routes.insert(route.pool.model.clone(), route);
        }
    }

    /// Stops serving `model`.
    pub fn remove_route(&self, model: &str) {
        if let Ok(mut routes) = self.routes.write() {
            routes.remove(model);
        }
    }

    fn route(&self, model: &str) -> Option<Arc<PoolRoute>> {
        self.routes.read().ok()?.get(model).cloned()
    }

    /// The pool (first by name) whose agents serve the embedding model `model`.
    pub(super) fn embedding_route(&self, model: &str) -> Option<Arc<PoolRoute>> {
        let routes = self.routes.read().ok()?;
        let mut serving: Vec<(&String, &Arc<PoolRoute>)> = routes
            .iter()
            .filter(|(_, r)| r.pool.embedding_model().as_deref() == Some(model))
            .collect();
        serving.sort_by_key(|(name, _)| *name);
        serving.first().map(|(_, r)| Arc::clone(r))
    }

    fn models(&self) -> ModelList {
        let routes = self.routes.read().map(|r| {
            r.iter()
                .flat_map(|(name, route)| [Some(name.clone()), route.pool.embedding_model()])
                .flatten()
                .collect::<Vec<_>>()
        });
        let mut names = routes.unwrap_or_default();
        names.sort();
        names.dedup();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ModelList::of(&refs, self.created, "inferpool")
    }
}

/// The gateway's routes.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(super::embed::embeddings))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(gateway)
}

/// An error answered in OpenAI's shape.
#[derive(Debug)]
pub struct ApiError {
    status: u16,
    kind: String,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: u16, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.to_owned(),
            message: message.into(),
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(&self.kind, &self.message, None)
    }
}

impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> Self {
        Self::new(e.status(), e.error_type(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = (status, axum::Json(self.body())).into_response();
        if self.status == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub(super) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(413, "request_too_large", r.body_text())
        } else {
            ApiError::invalid(r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

pub(super) fn priority(headers: &HeaderMap) -> Result<pb::Priority, ApiError> {
    let Some(value) = headers.get(PRIORITY_HEADER) else {
        return Ok(pb::Priority::Normal);
    };
    match value
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "critical" => Ok(pb::Priority::Critical),
        "high" => Ok(pb::Priority::High),
        "normal" => Ok(pb::Priority::Normal),
        "low" => Ok(pb::Priority::Low),
        other => Err(ApiError::invalid(format!(
            "{PRIORITY_HEADER}: unknown priority {other:?}"
        ))),
    }
}

/// The caller's W3C trace context, passed on to the agent (empty when absent or not a
/// plausible `traceparent`).
pub(super) fn traceparent(headers: &HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 55 && v.split('-').count() == 4)
        .unwrap_or_default()
        .to_owned()
}

fn sampling(s: &ValidSampling) -> pb::SamplingParams {
    pb::SamplingParams {
        temperature: Some(s.temperature),
        top_p: Some(s.top_p),
        top_k: s.top_k,
        seed: s.seed,
        max_tokens: s.max_tokens,
        stop: s.stop.clone(),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn shape(kind: Kind, gateway: &Gateway, model: &str) -> ResponseShape {
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    ResponseShape {
        kind,
        id: format!("{prefix}-gw{:x}{n:08x}", gateway.created),
        created: gateway.created,
        model: model.to_owned(),
    }
}

/// The first `bytes` of `text` at most, cut on a character boundary.
fn prefix_of(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The start of a conversation's text (its messages' contents, joined), as much as keys
/// prefix affinity.
fn chat_prefix(messages: &[Message]) -> String {
    let mut prefix = String::with_capacity(PREFIX_BYTES);
    for m in messages {
        let cut = prefix_of(&m.content, PREFIX_BYTES - prefix.len());
        prefix.push_str(cut);
        if cut.len() < m.content.len() {
            break;
        }
    }
    prefix
}

async fn chat(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = async {
        let mut req = ValidChatRequest::try_from(parse::<ChatCompletionRequest>(body)?)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let route = route_for(&gateway, &req.model)?;
        let prefix = chat_prefix(&req.messages);
        // The messages move into the agent's request: the gateway needs only the prefix.
        let messages = std::mem::take(&mut req.messages)
            .into_iter()
            .map(|m| pb::ChatMessage {
                role: m.role,
                content: m.content,
            })
            .collect();
        let request = pb::GenerateRequest {
            model: req.model.clone(),
            prompt: Some(pb::generate_request::Prompt::Chat(pb::ChatMessages {
                messages,
            })),
            sampling: Some(sampling(&req.sampling)),
            priority: priority(&headers)?.into(),
            traceparent: traceparent(&headers),
            ..pb::GenerateRequest::default()
        };
        Ok::<_, ApiError>((req, route, request, prefix))
    };
    let (req, route, request, prefix) = match checked.await {
        Ok(parts) => parts,
        Err(e) => return refused_before_routing(&gateway, e),
    };
    let session = session(&headers, &route, req.user.as_deref());
    let key = RequestKey {
        prefix: &prefix,
        session: session.as_deref(),
    };
    let shape = shape(Kind::Chat, &gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

async fn completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = async {
        let req = ValidCompletionRequest::try_from(parse::<CompletionRequest>(body)?)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if req.echo {
            return Err(ApiError::invalid(
                "echo is not supported through the gateway",
            ));
        }
        let route = route_for(&gateway, &req.model)?;
        let request = pb::GenerateRequest {
            model: req.model.clone(),
            prompt: Some(pb::generate_request::Prompt::Text(req.prompt.clone())),
            sampling: Some(sampling(&req.sampling)),
            priority: priority(&headers)?.into(),
            traceparent: traceparent(&headers),
            ..pb::GenerateRequest::default()
        };
        Ok::<_, ApiError>((req, route, request))
    };
    let (req, route, request) = match checked.await {
        Ok(parts) => parts,
        Err(e) => return refused_before_routing(&gateway, e),
    };
    let session = session(&headers, &route, req.user.as_deref());
    let key = RequestKey {
        prefix: prefix_of(&req.prompt, PREFIX_BYTES),
        session: session.as_deref(),
    };
    let shape = shape(Kind::Completion, &gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

fn route_for(gateway: &Gateway, model: &str) -> Result<Arc<PoolRoute>, ApiError> {
    gateway.route(model).ok_or_else(|| {
        ApiError::new(
            404,
            "model_not_found",
            format!("the model {model:?} does not exist"),
        )
    })
}

fn session(headers: &HeaderMap, route: &PoolRoute, user: Option<&str>) -> Option<String> {
    headers
        .get(route.session_header.as_str())
        .and_then(|v| v.to_str().ok())
        .or(user)
        .map(str::to_owned)
}

/// Answers a request refused before it matched a pool (counted under pool `_none`, so
/// that labels never come from unknown model names).
pub(super) fn refused_before_routing(gateway: &Gateway, e: ApiError) -> Response {
    gateway.metrics.unrouted().start().outcome(&e.kind);
    e.into_response()
}

async fn answer(
    route: &Arc<PoolRoute>,
    request: &pb::GenerateRequest,
    key: &RequestKey<'_>,
    shape: Relay,
) -> Response {
    let mut record = route.metrics.start();
    let deadline = tokio::time::Instant::now() + route.timeout;
    let forwarded = tokio::time::timeout_at(
        deadline,
        forward(&route.pool, &route.budget, route.forward, request, key),
    )
    .await
    .unwrap_or(Err(ForwardError::Timeout));
    match forwarded {
        Ok(Forwarded {
            value: committed,
            retries,
            queue_wait,
        }) => {
            record.forwarded(&committed.agent, retries, queue_wait);
            record.first_token();
            relay(route.pool.clone(), committed, shape, deadline, record).await
        }
        Err(e) => {
            record.outcome(e.error_type());
            ApiError::from(e).into_response()
        }
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let routes: Vec<Arc<PoolRoute>> = gateway
        .routes
        .read()
        .map(|r| r.values().cloned().collect())
        .unwrap_or_default();
    for route in &routes {
        if let Some(agents) = route.pool.with_view(|v| v.snapshot()) {
            gateway.metrics.observe_agents(&route.name, &agents);
        }
    }
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    gateway.metrics.retain_pools(&names);
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &gateway.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn models(State(gateway): State<Arc<Gateway>>) -> Response {
    axum::Json(gateway.models()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plausible_traceparent_is_passed_on_and_junk_is_not() {
        let mut headers = HeaderMap::new();
        assert_eq!(traceparent(&headers), "");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", HeaderValue::from_static(tp));
        assert_eq!(traceparent(&headers), tp);
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(traceparent(&headers), "");
    }

    #[test]
    fn priorities_and_prefixes() {
        let mut headers = HeaderMap::new();
        assert_eq!(priority(&headers).ok(), Some(pb::Priority::Normal));
        headers.insert(PRIORITY_HEADER, HeaderValue::from_static("Critical"));
        assert_eq!(priority(&headers).ok(), Some(pb::Priority::Critical));
        headers.insert(PRIORITY_HEADER, HeaderValue::from_static("urgent"));
        assert!(priority(&headers).is_err());
        let long = "é".repeat(200);
        let cut = prefix_of(&long, PREFIX_BYTES);
        assert!(cut.len() <= PREFIX_BYTES && long.starts_with(cut));
        let message = |content: &str| Message {
            role: "user".into(),
            content: content.into(),
        };
        let joined = format!("{long}{long}");
        let messages = [message(&long), message(&long)];
        assert_eq!(chat_prefix(&messages), prefix_of(&joined, PREFIX_BYTES));
        assert_eq!(chat_prefix(&[message("a"), message("b")]), "ab");
        // A message cut inside a character ends the prefix there, as the joined text would.
        let odd = format!("{}{}", "a".repeat(PREFIX_BYTES - 1), "é");
        let cut = chat_prefix(&[message(&odd), message("b")]);
        assert_eq!(cut, prefix_of(&format!("{odd}b"), PREFIX_BYTES));
    }
}
