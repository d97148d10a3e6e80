//! Answering a started generation over HTTP: one JSON body, or server-sent events
//! (`stream: true`) ending in `[DONE]`, with a usage chunk when
//! `stream_options.include_usage` asks for it. A client that goes away drops the event
//! stream, which drops the `TextStream` and cancels the request in the engine.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use inferpool_protocol::cache::CACHE_HEADER;
use inferpool_protocol::openai::{Kind, ResponseShape, ValidSampling};
use inferpool_protocol::sse;

use crate::serving::Agent;
use crate::serving::error::ServeError;
use crate::serving::record::Recorder;
use crate::serving::text::{TextEvent, TextStream, finish_reason};

/// How to shape one request's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    shape: ResponseShape,
    stream: bool,
    include_usage: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Answer {
    /// The answer to a request for `model` with `sampling`.
    pub fn new(kind: Kind, agent: &Agent, model: &str, sampling: &ValidSampling) -> Self {
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shape = ResponseShape {
            kind,
            id: format!("{prefix}-{:x}{n:08x}", agent.uptime_ms() ^ agent.created()),
            created: agent.created(),
            model: model.to_owned(),
        };
        Self {
            shape,
            stream: sampling.stream,
            include_usage: sampling.include_usage,
        }
    }

    /// Streams or collects `text` into the response.
    pub async fn respond(
        self,
        text: TextStream,
        mut recorder: Recorder,
        echo: Option<String>,
    ) -> Response {
        let outcome = text.cache_outcome();
        if text.cached() {
            recorder.replayed();
        }
        let mut response = if self.stream {
            let events = Events::new(self, text, recorder, echo);
            (sse::HEADERS, Body::from_stream(events.into_stream())).into_response()
        } else {
            self.whole(text, recorder, echo).await
        };
        if let Some(outcome) = outcome {
            let value = HeaderValue::from_static(outcome.name());
            response.headers_mut().insert(CACHE_HEADER, value);
        }
        response
    }

    async fn whole(
        self,
        mut text: TextStream,
        mut recorder: Recorder,
        echo: Option<String>,
    ) -> Response {
        let mut out = echo.unwrap_or_default();
        loop {
            match text.next().await {
                Some(TextEvent::Text { text: t, token_ids }) => {
                    recorder.tokens(token_ids.len());
                    out.push_str(&t);
                }
                Some(TextEvent::Done { finish, usage }) => {
                    recorder.outcome("ok");
                    let json = self.shape.whole(out, finish_reason(finish), usage);
                    return (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json,
                    )
                        .into_response();
                }
                Some(TextEvent::Failed(failure)) => {
                    return refuse(&mut recorder, failure.into_error());
                }
                None => {
                    let message = "the generation ended without a result".to_owned();
                    return refuse(&mut recorder, ServeError::Engine(message));
                }
            }
        }
    }
}

/// The state of one event stream.
struct Events {
    answer: Answer,
    text: TextStream,
    recorder: Recorder,
    /// Framed events not yet sent.
    queued: VecDeque<Bytes>,
    ended: bool,
}

impl Events {
    fn new(answer: Answer, text: TextStream, recorder: Recorder, echo: Option<String>) -> Self {
        let mut queued = VecDeque::new();
        if answer.shape.kind == Kind::Chat {
            let role = answer.shape.chunk(Some(String::new()), true, None);
            queued.push_back(sse::event(&role));
        }
        if let Some(echo) = echo {
            queued.push_back(sse::event(&answer.shape.chunk(Some(echo), false, None)));
        }
        Self {
            answer,
            text,
            recorder,
            queued,
            ended: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            let event = s.next_event().await?;
            Some((Ok(event), s))
        })
    }

    async fn next_event(&mut self) -> Option<Bytes> {
        while self.queued.is_empty() && !self.ended {
            self.pull().await;
        }
        self.queued.pop_front()
    }

    /// Reads one engine event and queues what it turns into.
    async fn pull(&mut self) {
        match self.text.next().await {
            Some(TextEvent::Text { text, token_ids }) => {
                self.recorder.tokens(token_ids.len());
                if !text.is_empty() {
                    self.push(self.answer.shape.chunk(Some(text), false, None));
                }
            }
            Some(TextEvent::Done { finish, usage }) => {
                self.recorder.outcome("ok");
                let finish = finish_reason(finish);
                self.push(self.answer.shape.chunk(None, false, Some(finish)));
                if self.answer.include_usage {
                    self.push(self.answer.shape.usage_chunk(usage));
                }
                self.end();
            }
            Some(TextEvent::Failed(failure)) => self.fail(failure.into_error()),
            None => self.fail(ServeError::Engine(
                "the generation ended without a result".to_owned(),
            )),
        }
    }

    fn fail(&mut self, error: ServeError) {
        self.recorder.outcome(error.error_type());
        self.push(serde_json::to_string(&error.body()).unwrap_or_default());
        self.end();
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

/// A refusal as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ServeError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0.body())).into_response()
    }
}

/// Answers with `e`, counting it under its type.
pub fn refuse(recorder: &mut Recorder, e: ServeError) -> Response {
    recorder.outcome(e.error_type());
    ApiError(e).into_response()
}

#[cfg(test)]
mod tests {
    use axum::response::sse::{Event, Sse};

    use super::*;

    /// The protocol's frames and headers are what axum's `Sse` wrote, which streams used
    /// before: clients see the same bytes.
    #[tokio::test]
    async fn events_are_framed_as_axum_framed_them() {
        let data = [r#"{"id":"x","choices":[]}"#, "two\nlines\r", "[DONE]"];
        let events = data.map(|d| Ok::<_, Infallible>(Event::default().data(d)));
        let theirs = Sse::new(futures::stream::iter(events)).into_response();
        let ours = data.map(|d| Ok::<_, Infallible>(sse::event(d)));
        let ours = (sse::HEADERS, Body::from_stream(futures::stream::iter(ours))).into_response();
        assert_eq!(theirs.headers(), ours.headers());
        let theirs = axum::body::to_bytes(theirs.into_body(), usize::MAX)
            .await
            .unwrap();
        let ours = axum::body::to_bytes(ours.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(theirs, ours);
        assert!(ours.ends_with(&sse::done()));
    }
}
