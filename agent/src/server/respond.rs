//! Answering a started generation over HTTP: one JSON body, or server-sent events
//! (`stream: true`) ending in `[DONE]`, with a usage chunk when
//! `stream_options.include_usage` asks for it. A client that goes away drops the event
//! stream, which drops the `TextStream` and cancels the request in the engine.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use inferpool_protocol::openai::{Kind, ResponseShape, ValidSampling};

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
        recorder: Recorder,
        echo: Option<String>,
    ) -> Response {
        if self.stream {
            let events = Events::new(self, text, recorder, echo);
            Sse::new(events.into_stream()).into_response()
        } else {
            self.whole(text, recorder, echo).await
        }
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
    queued: VecDeque<String>,
    ended: bool,
}

impl Events {
    fn new(answer: Answer, text: TextStream, recorder: Recorder, echo: Option<String>) -> Self {
        let mut queued = VecDeque::new();
        if answer.shape.kind == Kind::Chat {
            queued.push_back(answer.shape.chunk(Some(String::new()), true, None));
        }
        if let Some(echo) = echo {
            queued.push_back(answer.shape.chunk(Some(echo), false, None));
        }
        Self {
            answer,
            text,
            recorder,
            queued,
            ended: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            let data = s.next_data().await?;
            Some((Ok(Event::default().data(data)), s))
        })
    }

    async fn next_data(&mut self) -> Option<String> {
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
                    self.queued
                        .push_back(self.answer.shape.chunk(Some(text), false, None));
                }
            }
            Some(TextEvent::Done { finish, usage }) => {
                self.recorder.outcome("ok");
                let finish = finish_reason(finish);
                self.queued
                    .push_back(self.answer.shape.chunk(None, false, Some(finish)));
                if self.answer.include_usage {
                    self.queued.push_back(self.answer.shape.usage_chunk(usage));
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
        self.queued
            .push_back(serde_json::to_string(&error.body()).unwrap_or_default());
        self.end();
    }

    fn end(&mut self) {
        self.queued.push_back("[DONE]".to_owned());
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
