//! Relaying a committed agent stream to the client: server-sent events token by token (an
//! error after the first token ends the stream with an explicit error event), or one JSON
//! body. The agent's in-flight count and breaker learn the outcome when the relay ends,
//! however it ends (a client that leaves drops the stream, which cancels it at the agent).

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use inferpool_protocol::agent::{self as pb, GenerateResponse};
use inferpool_protocol::cache::CACHE_HEADER;
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::openai::{ErrorBody, Kind, ResponseShape, Usage, ValidSampling};
use inferpool_protocol::sse;
use tokio::time::Instant;

use crate::gateway::core::policy::ForwardError;
use crate::gateway::core::view::Outcome;
use crate::gateway::dispatch::pool::InFlight;
use crate::gateway::dispatch::stream::{Committed, Forwarded};
use crate::gateway::dispatch::verdict::refused;
use crate::gateway::metrics::RequestRecord;
use crate::gateway::upstream::generate::GenerateStream;

/// How to answer.
#[derive(Debug, Clone)]
pub struct Relay {
    shape: ResponseShape,
    stream: bool,
    include_usage: bool,
}

impl Relay {
    /// The answer of `shape`, streamed when `sampling` asks.
    pub fn new(shape: ResponseShape, sampling: &ValidSampling) -> Self {
        Self {
            shape,
            stream: sampling.stream,
            include_usage: sampling.include_usage,
        }
    }
}

/// Answers a request forwarded (or not) to an agent: its relay, or the pool's error.
pub async fn respond(
    forwarded: Result<Forwarded, ForwardError>,
    how: Relay,
    deadline: Instant,
    mut record: RequestRecord,
) -> Response {
    match forwarded {
        Ok(forwarded) => {
            let committed = committed(forwarded, &mut record);
            relay(committed, how, deadline, record).await
        }
        Err(e) => {
            record.outcome(e.error_type());
            super::error::ApiError::from(e).into_response()
        }
    }
}

/// Records how `forwarded` got to its agent, and its first token.
pub fn committed(forwarded: Forwarded, record: &mut RequestRecord) -> Committed {
    record.forwarded(
        forwarded.value.in_flight.agent(),
        forwarded.retries,
        forwarded.queue_wait,
    );
    record.first_token();
    forwarded.value
}

/// The server-sent events of `committed` (a stream whose headers went out already).
pub fn events(
    committed: Committed,
    how: Relay,
    deadline: Instant,
    record: RequestRecord,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let source = Source::of(committed, deadline, record);
    Events::new(how, source).into_stream()
}

/// Relays `committed` as `how` asks, until `deadline`.
pub async fn relay(
    committed: Committed,
    how: Relay,
    deadline: Instant,
    record: RequestRecord,
) -> Response {
    let source = Source::of(committed, deadline, record);
    let cache = source
        .first
        .as_ref()
        .and_then(|m| HeaderValue::from_str(&m.cache).ok())
        .filter(|v| !v.is_empty());
    let mut response = if how.stream {
        let events = Events::new(how, source).into_stream();
        (sse::HEADERS, Body::from_stream(events)).into_response()
    } else {
        whole(how, source).await
    };
    if let Some(value) = cache {
        response.headers_mut().insert(CACHE_HEADER, value);
    }
    response
}

struct Source {
    first: Option<GenerateResponse>,
    rest: GenerateStream,
    deadline: Instant,
    in_flight: InFlight,
    record: RequestRecord,
}

enum Piece {
    Text(String),
    /// The last text (agents send it with the finish when it is ready at once).
    End {
        text: String,
        finish: &'static str,
        usage: Usage,
    },
    /// The status a whole answer gets, and the error.
    Failed(StatusCode, ErrorBody),
}

impl Source {
    fn of(committed: Committed, deadline: Instant, record: RequestRecord) -> Self {
        Self {
            first: Some(committed.first),
            rest: committed.rest,
            deadline,
            in_flight: committed.in_flight,
            record,
        }
    }

    async fn next(&mut self) -> Piece {
        let message = match self.first.take() {
            Some(m) => Ok(Some(m)),
            None => match tokio::time::timeout_at(self.deadline, self.rest.message()).await {
                Ok(m) => m,
                Err(_) => return self.failed(ErrorType::Timeout, "the request timed out"),
            },
        };
        match message {
            Ok(Some(m)) => {
                let piece = piece(m);
                if matches!(piece, Piece::End { .. }) {
                    self.record.outcome("ok");
                }
                piece
            }
            Ok(None) => self.failed(ErrorType::UpstreamError, "the agent ended the stream early"),
            Err(status) => {
                let e = refused(&status);
                self.in_flight.set_outcome(Outcome::Failure);
                self.record.outcome(e.error_type());
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
                Piece::Failed(status, ErrorBody::new(e.error_type(), &e.to_string(), None))
            }
        }
    }

    fn failed(&mut self, kind: ErrorType, message: &str) -> Piece {
        self.in_flight.set_outcome(Outcome::Failure);
        self.record.outcome(kind.name());
        let status = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        Piece::Failed(status, ErrorBody::new(kind.name(), message, None))
    }
}

fn piece(m: GenerateResponse) -> Piece {
    let Some(finish) = m.finish else {
        return Piece::Text(m.text);
    };
    let finish = match pb::FinishReason::try_from(finish) {
        Ok(pb::FinishReason::Length) => "length",
        _ => "stop",
    };
    let u = m.usage.unwrap_or_default();
    let usage = Usage::new(u.prompt_tokens as usize, u.completion_tokens as usize);
    Piece::End {
        text: m.text,
        finish,
        usage,
    }
}

async fn whole(how: Relay, mut source: Source) -> Response {
    let mut text = String::new();
    loop {
        match source.next().await {
            Piece::Text(t) => text.push_str(&t),
            Piece::End {
                text: last,
                finish,
                usage,
            } => {
                text.push_str(&last);
                let json = how.shape.whole(text, finish, usage);
                return (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json,
                )
                    .into_response();
            }
            Piece::Failed(status, body) => return (status, axum::Json(body)).into_response(),
        }
    }
}

struct Events {
    how: Relay,
    source: Source,
    /// Framed events not yet sent.
    queued: VecDeque<Bytes>,
    ended: bool,
}

impl Events {
    fn new(how: Relay, source: Source) -> Self {
        let mut queued = VecDeque::new();
        if how.shape.kind == Kind::Chat {
            let role = how.shape.chunk(Some(String::new()), true, None);
            queued.push_back(sse::event(&role));
        }
        Self {
            how,
            source,
            queued,
            ended: false,
        }
    }

    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            while s.queued.is_empty() && !s.ended {
                s.pull().await;
            }
            let event = s.queued.pop_front()?;
            Some((Ok(event), s))
        })
    }

    async fn pull(&mut self) {
        match self.source.next().await {
            Piece::Text(t) if t.is_empty() => {}
            Piece::Text(t) => self.push(self.how.shape.chunk(Some(t), false, None)),
            Piece::End {
                text,
                finish,
                usage,
            } => {
                if !text.is_empty() {
                    self.push(self.how.shape.chunk(Some(text), false, None));
                }
                self.push(self.how.shape.chunk(None, false, Some(finish)));
                if self.how.include_usage {
                    self.push(self.how.shape.usage_chunk(usage));
                }
                self.end();
            }
            Piece::Failed(_, body) => {
                self.push(serde_json::to_string(&body).unwrap_or_default());
                self.end();
            }
        }
    }

    /// Queues one chunk's JSON as an event.
    fn push(&mut self, json: String) {
        self.queued.push_back(sse::event(&json));
    }

    fn end(&mut self) {
        self.queued.push_back(sse::done());
        self.ended = true;
    }
}
