//! Whole (not streamed) completions as the client sees them: the checked request goes to
//! the pool as the client sent it (see `dispatch::whole`), and the agent's answer comes
//! back as the agent gave it, counted under its outcome.

use std::borrow::Cow;

use axum::http::StatusCode;
use bytes::Bytes;
use inferpool_protocol::agent::Priority;
use inferpool_protocol::cache::CACHE_CONTROL;
use inferpool_protocol::errors::ErrorType;
use inferpool_protocol::priority::{PRIORITY_HEADER, priority_name};

use super::error::ApiError;
use super::reply::Complete;
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::Tried;
use crate::gateway::dispatch::gateway::PoolRoute;
use crate::gateway::dispatch::tries::priority_rank;
use crate::gateway::dispatch::verdict::error_of;
use crate::gateway::dispatch::whole::{UnaryRequest, forward_unary};
use crate::gateway::upstream::whole::Answer;

/// A whole-answer request as the client sent it, checked.
#[derive(Debug, Clone, Copy)]
pub struct Whole<'a> {
    path: &'a str,
    body: &'a Bytes,
    priority: Priority,
    passed: PassedHeaders<'a>,
}

/// The client's headers that the agent sees too (each empty when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct PassedHeaders<'a> {
    /// W3C trace context.
    pub traceparent: &'a str,
    /// `Cache-Control`, which the agent's response cache obeys.
    pub cache_control: &'a str,
}

impl<'a> Whole<'a> {
    /// The request at the agent's `path` with the client's `body`, its priority and the
    /// headers passed on.
    pub fn new(
        path: &'a str,
        body: &'a Bytes,
        priority: Priority,
        passed: PassedHeaders<'a>,
    ) -> Self {
        Self {
            path,
            body,
            priority,
            passed,
        }
    }
}

/// Answers `whole` from the pool of `route`: the answer of the agent that took it, or the
/// gateway's error.
pub async fn answer_whole(route: &PoolRoute, whole: Whole<'_>, key: &RequestKey<'_>) -> Complete {
    // One clock reading for the record and the deadline.
    let now = tokio::time::Instant::now();
    let mut record = route.metrics.start_at(now.into_std());
    let passed = [
        (PRIORITY_HEADER, priority_name(whole.priority)),
        ("traceparent", whole.passed.traceparent),
        (CACHE_CONTROL, whole.passed.cache_control),
    ];
    let headers: Vec<(&str, &str)> = passed.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let request = UnaryRequest {
        path: whole.path,
        headers: &headers,
        body: whole.body,
        rank: priority_rank(whole.priority),
    };
    let deadline = now + route.timeout;
    let sent = forward_unary(route, request, key, deadline);
    let answered = tokio::time::timeout_at(deadline, sent)
        .await
        .unwrap_or_else(|_| Err(route.timed_out()));
    match answered {
        Ok(Tried {
            value,
            retries,
            queue_wait,
        }) => {
            record.forwarded(&value.agent, retries, queue_wait);
            record.outcome(outcome_of(&value.answer).as_ref());
            passed_on(value.answer)
        }
        Err(e) => {
            record.outcome(e.error_type());
            ApiError::from(e).complete()
        }
    }
}

/// The outcome an answer is counted under: `ok`, or the agent's error type.
fn outcome_of(answer: &Answer) -> Cow<'static, str> {
    if (200..300).contains(&answer.status) {
        return Cow::Borrowed("ok");
    }
    let untyped = Cow::Borrowed(ErrorType::UpstreamError.name());
    error_of(&answer.body).map_or(untyped, |(kind, _)| kind.into())
}

/// The agent's answer as the client's.
fn passed_on(answer: Answer) -> Complete {
    Complete {
        status: StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
        content_type: answer.content_type,
        body: answer.body,
        retry_after: (answer.status == 429).then_some(1),
        cache: answer.cache,
    }
}
