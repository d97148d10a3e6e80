//! `POST /v1/embeddings` through the gateway: the request's `model` names an embedding
//! model, which selects the pool whose agents report serving it; the texts go to one agent
//! over the unary `Embed` call (retried on another agent when it fails, which is safe:
//! embedding has no side effects), and the vectors come back in OpenAI's shape.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inferpool_protocol::agent::{EmbedRequest, EmbedResponse};
use inferpool_protocol::openai::{
    Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EncodingFormat,
    ValidEmbeddingRequest, Vector,
};

use super::agents::InFlight;
use super::checks::{ApiError, parse, priority, traceparent};
use super::forward::{
    Ask, Attempt, ForwardError, Tried, classify, connection_to, priority_rank, try_agents,
};
use super::front::{Gateway, PoolRoute, refused_before_routing};
use super::pick::RequestKey;
use super::pool::Outcome;

/// The checked request and where it goes.
struct Routed {
    req: ValidEmbeddingRequest,
    route: Arc<PoolRoute>,
    rank: usize,
    traceparent: String,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match check(&gateway, &headers, body) {
        Ok(routed) => answer(routed).await,
        Err(e) => refused_before_routing(&gateway, e).into_response(),
    }
}

fn check(
    gateway: &Gateway,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Routed, ApiError> {
    let req = ValidEmbeddingRequest::try_from(parse::<EmbeddingRequest>(body)?)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let route = gateway.embedding_route(&req.model).ok_or_else(|| {
        let message = format!("no pool serves the embedding model {:?}", req.model);
        ApiError::new(404, "model_not_found", message)
    })?;
    Ok(Routed {
        rank: priority_rank(priority(headers)?),
        traceparent: traceparent(headers),
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
    } = routed;
    let mut record = route.metrics.start();
    let request = EmbedRequest {
        model: req.model.clone(),
        inputs: req.inputs.clone(),
        traceparent,
    };
    let key = RequestKey::default();
    let deadline = tokio::time::Instant::now() + route.timeout;
    let ask = Ask {
        rank,
        key: &key,
        deadline,
    };
    let tried = tokio::time::timeout_at(
        deadline,
        try_agents(&route.pool, &route.budget, route.forward, ask, |slot, _| {
            embed_on(slot, &request)
        }),
    )
    .await
    .unwrap_or(Err(ForwardError::Timeout));
    match tried {
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

/// One try on the agent of `slot`; the agent is done with it when the call returns.
async fn embed_on(
    mut slot: InFlight,
    request: &EmbedRequest,
) -> Result<(String, EmbedResponse), Attempt> {
    let mut client = connection_to(&mut slot).await?.client();
    match client.embed(request.clone()).await {
        Ok(response) => {
            slot.set_outcome(Outcome::Success);
            Ok((slot.agent().to_owned(), response.into_inner()))
        }
        Err(status) => Err(classify(slot, &status)),
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
