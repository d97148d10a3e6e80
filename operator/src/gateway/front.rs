//! The gateway's OpenAI front door (axum): `model` selects the pool; requests are checked
//! here (malformed ones never reach an agent), then streamed ones are forwarded over gRPC
//! and answered in the same shape as the agents' own API, token by token, and whole ones
//! are passed to the agent's own API and its answer back (see `unary`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inferpool_protocol::agent as pb;
use inferpool_protocol::openai::{
    ChatCompletionRequest, CompletionRequest, Kind, ModelList, ResponseShape, ValidChatRequest,
    ValidCompletionRequest, ValidSampling,
};
use serde::de::DeserializeOwned;

use super::agents::Pool;
use super::checks::{
    ApiError, Headers, PREFIX_BYTES, bytes_of, chat_prefix, parse_json, prefix_of, priority,
    session, traceparent,
};
use super::forward::{ForwardError, ForwardSettings, Forwarded, forward};
use super::metrics::{GatewayMetrics, PoolMetrics};
use super::pick::RequestKey;
use super::relay::{Relay, relay};
use super::reply::Reply;
use super::retry::RetryBudget;
use super::unary::{Whole, answer_whole};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

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

/// A checked request: what the gateway forwards, and where.
struct Checked<R> {
    req: R,
    route: Arc<PoolRoute>,
    body: Bytes,
    priority: pb::Priority,
}

/// Parses and checks a request of type `R` (from its raw form `Raw`) and finds its pool.
fn check<Raw, R>(
    gateway: &Gateway,
    headers: &impl Headers,
    body: Bytes,
    model: impl FnOnce(&R) -> &str,
) -> Result<Checked<R>, ApiError>
where
    Raw: DeserializeOwned,
    R: TryFrom<Raw>,
    R::Error: std::fmt::Display,
{
    let req =
        R::try_from(parse_json::<Raw>(&body)?).map_err(|e| ApiError::invalid(e.to_string()))?;
    let route = route_for(gateway, model(&req))?;
    let priority = priority(headers)?;
    Ok(Checked {
        req,
        route,
        body,
        priority,
    })
}

async fn chat(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    match bytes_of(body) {
        Ok(body) => answer_chat(&gateway, &headers, body).await,
        Err(e) => refused_before_routing(&gateway, e),
    }
}

/// Answers a chat completion request with `headers` and `body`.
pub async fn answer_chat(gateway: &Gateway, headers: &impl Headers, body: Bytes) -> Reply {
    let checked =
        check::<ChatCompletionRequest, ValidChatRequest>(gateway, headers, body, |r| &r.model);
    let Checked {
        mut req,
        route,
        body,
        priority,
    } = match checked {
        Ok(checked) => checked,
        Err(e) => return refused_before_routing(gateway, e),
    };
    let prefix = chat_prefix(&req.messages);
    let session = session(headers, &route, req.user.as_deref());
    let key = RequestKey {
        prefix: &prefix,
        session: session.as_deref(),
    };
    let trace = traceparent(headers);
    if !req.sampling.stream {
        let whole = Whole::new("/v1/chat/completions", &body, priority, &trace);
        return Reply::Complete(answer_whole(&route, whole, &key).await);
    }
    // The messages move into the agent's request: the gateway needs only the prefix.
    let messages = std::mem::take(&mut req.messages)
        .into_iter()
        .map(|m| pb::ChatMessage {
            role: m.role,
            content: m.content,
        })
        .collect();
    let prompt = pb::generate_request::Prompt::Chat(pb::ChatMessages { messages });
    let request = generate_request(&req.model, prompt, &req.sampling, priority, trace);
    let shape = shape(Kind::Chat, gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

async fn completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    match bytes_of(body) {
        Ok(body) => answer_completion(&gateway, &headers, body).await,
        Err(e) => refused_before_routing(&gateway, e),
    }
}

/// Answers a text completion request with `headers` and `body`.
pub async fn answer_completion(gateway: &Gateway, headers: &impl Headers, body: Bytes) -> Reply {
    let checked =
        check::<CompletionRequest, ValidCompletionRequest>(gateway, headers, body, |r| &r.model)
            .and_then(|c| {
                if c.req.echo {
                    return Err(ApiError::invalid(
                        "echo is not supported through the gateway",
                    ));
                }
                Ok(c)
            });
    let Checked {
        req,
        route,
        body,
        priority,
    } = match checked {
        Ok(checked) => checked,
        Err(e) => return refused_before_routing(gateway, e),
    };
    let session = session(headers, &route, req.user.as_deref());
    let key = RequestKey {
        prefix: prefix_of(&req.prompt, PREFIX_BYTES),
        session: session.as_deref(),
    };
    let trace = traceparent(headers);
    if !req.sampling.stream {
        let whole = Whole::new("/v1/completions", &body, priority, &trace);
        return Reply::Complete(answer_whole(&route, whole, &key).await);
    }
    let prompt = pb::generate_request::Prompt::Text(req.prompt.clone());
    let request = generate_request(&req.model, prompt, &req.sampling, priority, trace);
    let shape = shape(Kind::Completion, gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

fn generate_request(
    model: &str,
    prompt: pb::generate_request::Prompt,
    s: &ValidSampling,
    priority: pb::Priority,
    traceparent: String,
) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.to_owned(),
        prompt: Some(prompt),
        sampling: Some(sampling(s)),
        priority: priority.into(),
        traceparent,
        ..pb::GenerateRequest::default()
    }
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

/// Answers a request refused before it matched a pool (counted under pool `_none`, so
/// that labels never come from unknown model names).
pub(super) fn refused_before_routing(gateway: &Gateway, e: ApiError) -> Reply {
    gateway.metrics.unrouted().start().outcome(&e.kind);
    Reply::Complete(e.complete())
}

async fn answer(
    route: &Arc<PoolRoute>,
    request: &pb::GenerateRequest,
    key: &RequestKey<'_>,
    shape: Relay,
) -> Reply {
    let mut record = route.metrics.start();
    let deadline = tokio::time::Instant::now() + route.timeout;
    let sent = forward(
        &route.pool,
        &route.budget,
        route.forward,
        request,
        key,
        deadline,
    );
    let forwarded = tokio::time::timeout_at(deadline, sent)
        .await
        .unwrap_or(Err(ForwardError::Timeout));
    match forwarded {
        Ok(Forwarded {
            value: committed,
            retries,
            queue_wait,
        }) => {
            record.forwarded(committed.in_flight.agent(), retries, queue_wait);
            record.first_token();
            Reply::Response(relay(committed, shape, deadline, record).await)
        }
        Err(e) => {
            record.outcome(e.error_type());
            Reply::Complete(ApiError::from(e).complete())
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
