//! `POST /v1/embeddings` through the gateway: the request's `model` names an embedding
//! model, which selects the pool whose agents report serving it; the texts go to one agent
//! over the unary `Embed` call (see `dispatch::embed`), and the vectors come back in
//! OpenAI's shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inferpool_protocol::agent::{EmbedRequest, EmbedResponse};
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::{
    Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EncodingFormat,
    ValidEmbeddingRequest, Vector,
};

use super::checks::{cache_control, parse_json, priority, traceparent};
use super::completions::refused_before_routing;
use super::error::ApiError;
use crate::gateway::core::policy::Tried;
use crate::gateway::dispatch::embed::forward_embed;
use crate::gateway::dispatch::gateway::{Gateway, PoolRoute};
use crate::gateway::dispatch::tries::priority_rank;

/// The checked request and where it goes.
struct Routed {
    req: ValidEmbeddingRequest,
    route: Arc<PoolRoute>,
    rank: usize,
    traceparent: String,
    cache_control: String,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match check(&gateway, &headers, &body) {
        Ok(routed) => answer(routed).await,
        Err(e) => refused_before_routing(&gateway, e).into_response(),
    }
}

/// An embedding request is charged its input's estimate (it generates nothing).
fn access_estimate(body: &Bytes) -> u32 {
    super::access::estimate(body.len(), Some(0))
}

fn check(gateway: &Gateway, headers: &HeaderMap, body: &Bytes) -> Result<Routed, ApiError> {
    super::access::identify(gateway, headers)?;
    let req = ValidEmbeddingRequest::try_from(parse_json::<EmbeddingRequest>(body)?)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let route = gateway.embedding_route(&req.model).ok_or_else(|| {
        let message = format!("no pool serves the embedding model {:?}", req.model);
        ApiError::of(ErrorType::ModelNotFound, message)
    })?;
    let rank = priority_rank(priority(headers)?);
    super::access::admit(gateway, headers, &req.model, access_estimate(body))?;
    Ok(Routed {
        rank,
        traceparent: traceparent(headers),
        cache_control: cache_control(headers),
        req,
        route,
    })
}

async fn answer(routed: Routed) -> Response {
    let Routed {
        req,
        route,
        rank,
        traceparent,
        cache_control,
    } = routed;
    let mut record = route.metrics.start();
    let request = EmbedRequest {
        model: req.model.clone(),
        inputs: req.inputs.clone(),
        traceparent,
        cache_control,
    };
    let deadline = tokio::time::Instant::now() + route.timeout;
    match forward_embed(&route, &request, rank, deadline).await {
        Ok(Tried {
            value: (agent, embedded),
            retries,
            queue_wait,
        }) => {
            record.forwarded(&agent, retries, queue_wait);
            record.first_token();
            record.outcome("ok");
            Json(response(req.model, req.encoding, embedded)).into_response()
        }
        Err(e) => {
            record.outcome(e.error_type());
            ApiError::from(e).into_response()
        }
    }
}

/// The agent's vectors in OpenAI's shape, encoded as the client asked.
fn response(model: String, encoding: EncodingFormat, embedded: EmbedResponse) -> EmbeddingResponse {
    let data = embedded
        .embeddings
        .into_iter()
        .zip(0..)
        .map(|(v, index)| Embedding {
            object: "embedding".to_owned(),
            index,
            embedding: Vector::encode(v.values, encoding),
        })
        .collect();
    EmbeddingResponse {
        object: "list".to_owned(),
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: embedded.prompt_tokens,
            total_tokens: embedded.prompt_tokens,
        },
    }
}
