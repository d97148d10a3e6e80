//! A streamed request for a pool with no ready agent (scaled to zero, or every agent
//! restarting): it is held (see `dispatch::held`) until an agent takes it. If none has
//! within `HEARTBEAT`, the stream's headers go out and an SSE comment follows every
//! `HEARTBEAT`, so that clients and proxies with idle timeouts keep it open; once an agent
//! takes it the tokens follow as usual. A held stream that ends without an agent (its
//! deadline, or the pool's limit of held requests) ends with a `pool_scaling` error event;
//! one answered within `HEARTBEAT` gets the plain `503` with `Retry-After` instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use inferpool_protocol::agent as pb;
use inferpool_protocol::sse;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::error::ApiError;
use super::relay::{Relay, committed, events, respond};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::ForwardError;
use crate::gateway::dispatch::gateway::PoolRoute;
use crate::gateway::dispatch::stream::{Forwarded, forward};
use crate::gateway::metrics::RequestRecord;

/// How long a held stream stays silent, and then the interval of its heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Events buffered between the holding task and the client's connection.
const BUFFERED_EVENTS: usize = 16;

/// A request's key for the pickers, owned (the held request outlives its handler's borrow).
#[derive(Debug, Clone)]
pub struct OwnedKey {
    prefix: String,
    session: Option<String>,
}

impl OwnedKey {
    /// The key of `key`.
    pub fn of(key: &RequestKey<'_>) -> Self {
        Self {
            prefix: key.prefix.to_owned(),
            session: key.session.map(str::to_owned),
        }
    }
}

type Sent = std::pin::Pin<Box<dyn Future<Output = Result<Forwarded, ForwardError>> + Send>>;

/// Answers a streamed `request` to the pool of `route`, which has no agent now.
pub async fn answer_held(
    route: Arc<PoolRoute>,
    request: pb::GenerateRequest,
    key: OwnedKey,
    how: Relay,
) -> Response {
    let record = route.metrics.start();
    let deadline = Instant::now() + route.timeout;
    let mut sent: Sent = Box::pin(send(route, request, key, deadline));
    tokio::select! {
        forwarded = &mut sent => return respond(forwarded, how, deadline, record).await,
        () = tokio::time::sleep(HEARTBEAT) => {}
    }
    let (tx, rx) = mpsc::channel(BUFFERED_EVENTS);
    tokio::spawn(keep_alive(sent, tx, how, deadline, record));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    });
    (sse::HEADERS, Body::from_stream(body)).into_response()
}

async fn send(
    route: Arc<PoolRoute>,
    request: pb::GenerateRequest,
    key: OwnedKey,
    deadline: Instant,
) -> Result<Forwarded, ForwardError> {
    let key = RequestKey {
        prefix: &key.prefix,
        session: key.session.as_deref(),
    };
    let sent = forward(
        &route.pool,
        &route.budget,
        route.forward,
        &request,
        &key,
        deadline,
    );
    tokio::time::timeout_at(deadline, sent)
        .await
        .unwrap_or_else(|_| Err(route.timed_out()))
}

type Events = mpsc::Sender<Result<Bytes, Infallible>>;

/// Heartbeats until an agent takes the request, then its events; a client that leaves
/// drops `sent`, which gives its held place (or its agent's slot) back.
async fn keep_alive(
    mut sent: Sent,
    tx: Events,
    how: Relay,
    deadline: Instant,
    mut record: RequestRecord,
) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    let forwarded = loop {
        tokio::select! {
            forwarded = &mut sent => break forwarded,
            _ = beat.tick() => {
                if tx.send(Ok(sse::comment("waiting for an agent"))).await.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    };
    match forwarded {
        Ok(forwarded) => {
            let committed = committed(forwarded, &mut record);
            let mut relayed = std::pin::pin!(events(committed, how, deadline, record));
            while let Some(event) = relayed.next().await {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }
        Err(e) => {
            record.outcome(e.error_type());
            let body = serde_json::to_string(&ApiError::from(e).body()).unwrap_or_default();
            let _ = tx.send(Ok(sse::event(&body))).await;
            let _ = tx.send(Ok(sse::done())).await;
        }
    }
}
