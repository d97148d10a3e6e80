//! Chat and text completions: `model` selects the pool; requests are checked here
//! (malformed ones never reach an agent), then streamed ones go to an agent over gRPC and
//! are answered as server-sent events token by token (see `relay`), and whole ones are
//! passed to the agent's own API and its answer back (see `whole`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inferpool_protocol::agent as pb;
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::{
    ChatCompletionRequest, CompletionRequest, Kind, ResponseShape, ValidChatRequest,
    ValidCompletionRequest, ValidSampling,
};
use serde::de::DeserializeOwned;

use super::access;
use super::checks::{
    PREFIX_BYTES, cache_control, chat_prefix, parse_json, prefix_of, priority, session, traceparent,
};
use super::error::ApiError;
use super::held::{OwnedKey, answer_held};
use super::relay::{Relay, respond};
use super::whole::{PassedHeaders, Whole, answer_whole};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::dispatch::gateway::{Gateway, PoolRoute};
use crate::gateway::dispatch::stream::forward;

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
    headers: &HeaderMap,
    body: Bytes,
    asks: impl FnOnce(&R) -> (&str, Option<u32>),
) -> Result<Checked<R>, ApiError>
where
    Raw: DeserializeOwned,
    R: TryFrom<Raw>,
    R::Error: std::fmt::Display,
{
    // First: a client without a valid key learns nothing, not even how its body is wrong.
    access::identify(gateway, headers)?;
    let req =
        R::try_from(parse_json::<Raw>(&body)?).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (model, max_tokens) = asks(&req);
    let route = route_for(gateway, model)?;
    let priority = priority(headers)?;
    // Last: only a request that will be forwarded is charged.
    let tokens = access::estimate(body.len(), max_tokens);
    access::admit(gateway, headers, model, tokens)?;
    Ok(Checked {
        req,
        route,
        body,
        priority,
    })
}

/// `POST /v1/chat/completions` (its body already read whole, within the server's limits).
pub(super) async fn chat(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer_chat(&gateway, &headers, body).await
}

/// Answers a chat completion request with `headers` and `body`.
pub async fn answer_chat(gateway: &Gateway, headers: &HeaderMap, body: Bytes) -> Response {
    let checked = check::<ChatCompletionRequest, ValidChatRequest>(gateway, headers, body, |r| {
        (&r.model, r.sampling.max_tokens)
    });
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
    let passed = Passed::of(headers);
    if !req.sampling.stream {
        let whole = Whole::new("/v1/chat/completions", &body, priority, passed.borrowed());
        return answer_whole(&route, whole, &key).await.into_response();
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
    let request = generate_request(&req.model, prompt, &req.sampling, priority, passed);
    let shape = shape(Kind::Chat, gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

/// `POST /v1/completions`.
pub(super) async fn completions(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer_completion(&gateway, &headers, body).await
}

/// Answers a text completion request with `headers` and `body`.
pub async fn answer_completion(gateway: &Gateway, headers: &HeaderMap, body: Bytes) -> Response {
    let checked = check::<CompletionRequest, ValidCompletionRequest>(gateway, headers, body, |r| {
        (&r.model, r.sampling.max_tokens)
    })
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
    let passed = Passed::of(headers);
    if !req.sampling.stream {
        let whole = Whole::new("/v1/completions", &body, priority, passed.borrowed());
        return answer_whole(&route, whole, &key).await.into_response();
    }
    let prompt = pb::generate_request::Prompt::Text(req.prompt.clone());
    let request = generate_request(&req.model, prompt, &req.sampling, priority, passed);
    let shape = shape(Kind::Completion, gateway, &req.model);
    answer(&route, &request, &key, Relay::new(shape, &req.sampling)).await
}

/// The client's headers that the agent sees too, owned.
struct Passed {
    traceparent: String,
    cache_control: String,
}

impl Passed {
    fn of(headers: &HeaderMap) -> Self {
        Self {
            traceparent: traceparent(headers),
            cache_control: cache_control(headers),
        }
    }

    fn borrowed(&self) -> PassedHeaders<'_> {
        PassedHeaders {
            traceparent: &self.traceparent,
            cache_control: &self.cache_control,
        }
    }
}

fn generate_request(
    model: &str,
    prompt: pb::generate_request::Prompt,
    s: &ValidSampling,
    priority: pb::Priority,
    passed: Passed,
) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.to_owned(),
        prompt: Some(prompt),
        sampling: Some(sampling(s)),
        priority: priority.into(),
        traceparent: passed.traceparent,
        cache_control: passed.cache_control,
        ..pb::GenerateRequest::default()
    }
}

fn route_for(gateway: &Gateway, model: &str) -> Result<Arc<PoolRoute>, ApiError> {
    gateway.route(model).ok_or_else(|| {
        ApiError::of(
            ErrorType::ModelNotFound,
            format!("the model {model:?} does not exist"),
        )
    })
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
    if !route.pool.has_agents() {
        return answer_held(route.clone(), request.clone(), OwnedKey::of(key), shape).await;
    }
    let record = route.metrics.start();
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
        .unwrap_or_else(|_| Err(route.timed_out()));
    respond(forwarded, shape, deadline, record).await
}
