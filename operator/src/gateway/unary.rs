//! Whole (not streamed) completions: the client's checked request goes, as the client sent
//! it, to the agent's own OpenAI API over HTTP/1.1 (see `http1`), and the agent's answer
//! comes back as the agent gave it. A streamed answer needs the gateway to see each token
//! (to commit on the first one, and to end a broken stream with an error event), so streams
//! use gRPC; a whole answer needs nothing of the kind, and the agent serves HTTP/1.1 for
//! less than gRPC. Retries, queueing and the breaker are the same as for streams.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use inferpool_protocol::agent::Priority;
use inferpool_protocol::openai::ErrorBody;
use tokio::time::Instant;

use super::agents::{InFlight, Pool};
use super::checks::{ApiError, PRIORITY_HEADER};
use super::forward::{Ask, Attempt, ForwardError, ForwardSettings, Tried, try_agents};
use super::front::PoolRoute;
use super::http1::{self, Answer, CallError, Post};
use super::pick::RequestKey;
use super::pool::{Busy, Outcome};
use super::reply::Complete;
use super::retry::RetryBudget;

/// A whole-answer request as the client sent it, checked.
#[derive(Debug, Clone, Copy)]
pub struct Whole<'a> {
    path: &'a str,
    body: &'a Bytes,
    priority: Priority,
    traceparent: &'a str,
}

impl<'a> Whole<'a> {
    /// The request at the agent's `path` with the client's `body`, its priority and its
    /// trace context (empty when none).
    pub fn new(path: &'a str, body: &'a Bytes, priority: Priority, traceparent: &'a str) -> Self {
        Self {
            path,
            body,
            priority,
            traceparent,
        }
    }
}

/// Answers `whole` from the pool of `route`: the answer of the agent that took it, or the
/// gateway's error.
pub async fn answer_whole(route: &PoolRoute, whole: Whole<'_>, key: &RequestKey<'_>) -> Complete {
    // One clock reading for the record and the deadline.
    let now = tokio::time::Instant::now();
    let mut record = route.metrics.start_at(now.into_std());
    let priority = [(PRIORITY_HEADER, priority_name(whole.priority))];
    let with_trace = [priority[0], ("traceparent", whole.traceparent)];
    let request = UnaryRequest {
        path: whole.path,
        headers: if whole.traceparent.is_empty() {
            &priority
        } else {
            &with_trace
        },
        body: whole.body,
        rank: super::forward::priority_rank(whole.priority),
    };
    let deadline = now + route.timeout;
    let sent = forward_unary(route, request, key, deadline);
    let answered = tokio::time::timeout_at(deadline, sent)
        .await
        .unwrap_or(Err(ForwardError::Timeout));
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

fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Unspecified | Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

/// The outcome an answer is counted under: `ok`, or the agent's error type.
fn outcome_of(answer: &Answer) -> Cow<'static, str> {
    if (200..300).contains(&answer.status) {
        return Cow::Borrowed("ok");
    }
    error_of(&answer.body).map_or(Cow::Borrowed("upstream_error"), |(kind, _)| kind.into())
}

/// The agent's answer as the client's.
fn passed_on(answer: Answer) -> Complete {
    Complete {
        status: StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY),
        content_type: answer.content_type,
        body: answer.body,
        retry_after: answer.status == 429,
    }
}

/// A checked request on its way to an agent.
#[derive(Debug, Clone, Copy)]
pub struct UnaryRequest<'a> {
    /// The agent's path for it.
    pub path: &'a str,
    /// Headers passed on (priority, trace context).
    pub headers: &'a [(&'a str, &'a str)],
    /// The client's body.
    pub body: &'a Bytes,
    /// Its priority rank (0 = critical .. 3 = low).
    pub rank: usize,
}

/// The agent that answered, and its answer.
#[derive(Debug)]
pub struct Answered {
    /// The agent.
    pub agent: String,
    /// Its answer: a success, or its verdict on the request (a 4xx other than 429).
    pub answer: Answer,
}

/// Sends `request` to the pool of `route` until an agent answers it (or refuses the
/// request itself), or `deadline`.
pub async fn forward_unary(
    route: &PoolRoute,
    request: UnaryRequest<'_>,
    key: &RequestKey<'_>,
    deadline: Instant,
) -> Result<Tried<Answered>, ForwardError> {
    let ask = Ask {
        rank: request.rank,
        key,
        deadline,
    };
    forward_unary_to(&route.pool, &route.budget, route.forward, request, ask).await
}

/// The same, to `pool` with its `budget` and `settings`.
pub async fn forward_unary_to(
    pool: &Arc<Pool>,
    budget: &RetryBudget,
    settings: ForwardSettings,
    request: UnaryRequest<'_>,
    ask: Ask<'_>,
) -> Result<Tried<Answered>, ForwardError> {
    try_agents(pool, budget, settings, ask, |slot, http| {
        attempt(slot, http, request)
    })
    .await
}

async fn attempt(
    mut slot: InFlight,
    http: std::net::SocketAddr,
    request: UnaryRequest<'_>,
) -> Result<Answered, Attempt> {
    let post = Post {
        path: request.path,
        headers: request.headers,
        body: request.body,
    };
    let answer = match http1::post(http, post).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(agent = slot.agent(), error = %e, "no answer");
            return Err(call_failed(slot, &e));
        }
    };
    let verdict = classify(&answer);
    slot.set_outcome(match verdict {
        Verdict::AgentFailed => Outcome::Failure,
        Verdict::Answer | Verdict::Busy(..) => Outcome::Success,
    });
    let agent = slot.agent().to_owned();
    drop(slot);
    match verdict {
        Verdict::Answer => Ok(Answered { agent, answer }),
        Verdict::Busy(busy, e) => Err(Attempt::Busy(busy, e)),
        Verdict::AgentFailed => Err(Attempt::Retryable(ForwardError::Unavailable)),
    }
}

/// A call that got no answer: the agent is lost when its connection failed, and failed
/// when it answered what is not HTTP.
fn call_failed(mut slot: InFlight, e: &CallError) -> Attempt {
    if let CallError::Malformed(_) = e {
        slot.set_outcome(Outcome::Failure);
        return Attempt::Retryable(ForwardError::Unavailable);
    }
    slot.set_outcome(Outcome::Lost);
    Attempt::Lost(ForwardError::Unavailable)
}

/// What an answer means for the request.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Passed on to the client: a success, or the agent's verdict on the request.
    Answer,
    /// The agent is healthy but cannot take it now (full queue, draining): another may.
    Busy(Busy, ForwardError),
    /// The agent failed: another may answer, and its breaker learns of it.
    AgentFailed,
}

fn classify(answer: &Answer) -> Verdict {
    match answer.status {
        200..=299 => Verdict::Answer,
        429 | 503 => match error_of(&answer.body) {
            Some((kind, message)) => {
                let busy = if answer.status == 429 {
                    Busy::Full
                } else {
                    Busy::Draining
                };
                let status = answer.status;
                Verdict::Busy(
                    busy,
                    ForwardError::Refused {
                        status,
                        kind,
                        message,
                    },
                )
            }
            None => Verdict::AgentFailed,
        },
        400..=499 => Verdict::Answer,
        _ => Verdict::AgentFailed,
    }
}

/// The type and message of an error in OpenAI's shape, if it is one.
pub fn error_of(body: &[u8]) -> Option<(String, String)> {
    let error: ErrorBody = serde_json::from_slice(body).ok()?;
    Some((error.error.kind, error.error.message))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;
    use crate::gateway::forward::testing::round_robin_pool;
    use crate::gateway::pick::Reported;

    /// A loopback agent that answers every request with `status` and `body`, and counts
    /// the requests it got.
    async fn agent(
        status: &'static str,
        body: &'static str,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = count.clone();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    const KEY: RequestKey<'static> = RequestKey {
        prefix: "",
        session: None,
    };
    static BODY: Bytes = Bytes::from_static(b"{}");

    /// A completion request with `body`, normal priority, no headers.
    fn request(body: &Bytes) -> UnaryRequest<'_> {
        UnaryRequest {
            path: "/v1/completions",
            headers: &[],
            body,
            rank: 2,
        }
    }

    /// A normal request with a minute to go.
    fn ask() -> Ask<'static> {
        Ask {
            rank: 2,
            key: &KEY,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    const SETTINGS: ForwardSettings = ForwardSettings {
        max_retries: 2,
        queue_wait: Duration::from_secs(1),
    };

    #[tokio::test]
    async fn a_busy_agent_is_passed_over_and_a_verdict_passed_on() {
        let draining =
            r#"{"error":{"message":"draining","type":"draining","param":null,"code":null}}"#;
        let (busy, busy_count) = agent("503 Service Unavailable", draining).await;
        let (fine, _) = agent("200 OK", r#"{"object":"chat.completion"}"#).await;
        let pool = round_robin_pool(&[busy, fine], 8);
        let budget = RetryBudget::new(100);
        let request = request(&BODY);
        let mut retries = 0;
        // Round robin starts one of the two requests on the draining agent.
        for _ in 0..2 {
            let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
            let tried = sent.await.unwrap();
            assert_eq!(
                (tried.value.agent.as_str(), tried.value.answer.status),
                ("a1", 200)
            );
            retries += tried.retries;
        }
        // It was visited once: its refusal told the gateway it drains, and the visit
        // counted as a retry.
        let visits = busy_count.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((visits, retries), (1, 1));
        // A draining agent is not a failing one: its breaker stays closed, and it takes
        // requests again once a report says it is back.
        let states = pool.with_view(|v| v.snapshot()).unwrap();
        assert_eq!(states[0].2, "closed");
        let idle = Reported {
            max_batch_size: 8,
            ..Reported::default()
        };
        pool.with_view(|v| v.report("a0", idle, false));
        let healthy = pool.with_view(|v| v.healthy_ids()).unwrap();
        assert_eq!(healthy, ["a0", "a1"]);

        // The agent's verdict on the request itself is the answer: no retry.
        let invalid = r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#;
        let (refusing, _) = agent("400 Bad Request", invalid).await;
        let pool = round_robin_pool(&[refusing], 8);
        let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
        let tried = sent.await.unwrap();
        assert_eq!((tried.value.answer.status, tried.retries), (400, 0));
        assert_eq!(outcome_of(&tried.value.answer), "invalid_request_error");
    }

    #[tokio::test]
    async fn a_full_agent_is_passed_over_without_spending_the_retry_budget() {
        let full = r#"{"error":{"message":"full","type":"queue_full","param":null,"code":null}}"#;
        let (busy, busy_count) = agent("429 Too Many Requests", full).await;
        let (fine, _) = agent("200 OK", "{}").await;
        let pool = round_robin_pool(&[busy, fine], 8);
        let budget = RetryBudget::new(0);
        while budget.try_withdraw() {}
        let request = request(&BODY);
        for _ in 0..3 {
            let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
            assert_eq!(sent.await.unwrap().value.agent, "a1");
        }
        // Saturated until its next report: one visit, however many requests follow.
        assert_eq!(busy_count.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_unreachable_agent_fails_over_and_counts_against_its_breaker() {
        let (fine, _) = agent("200 OK", "{}").await;
        // Nothing listens there once the listener is gone.
        let gone = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = round_robin_pool(&[gone, fine], 8);
        let budget = RetryBudget::new(100);
        let request = request(&BODY);
        for _ in 0..6 {
            let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
            assert_eq!(sent.await.unwrap().value.agent, "a1");
        }
        let healthy = pool.with_view(|v| v.healthy_ids()).unwrap();
        assert_eq!(
            healthy,
            ["a1"],
            "a0 is out of rotation until it reports again"
        );
        let states = pool.with_view(|v| v.snapshot()).unwrap();
        assert_eq!(states[0].1, 0, "its slot came back");
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn error(kind: &str) -> String {
        serde_json::to_string(&ErrorBody::new(kind, "m", None)).unwrap()
    }

    #[test]
    fn answers_are_passed_on_busy_agents_retried_and_failures_counted() {
        assert_eq!(classify(&answer(200, "{}")), Verdict::Answer);
        assert_eq!(
            classify(&answer(400, &error("invalid_request_error"))),
            Verdict::Answer,
            "the request's own fault: passed on, the agent is fine"
        );
        let full = ForwardError::Refused {
            status: 429,
            kind: "queue_full".into(),
            message: "m".into(),
        };
        let verdict = classify(&answer(429, &error("queue_full")));
        assert_eq!(verdict, Verdict::Busy(Busy::Full, full));
        assert!(matches!(
            classify(&answer(503, &error("draining"))),
            Verdict::Busy(Busy::Draining, ForwardError::Refused { status: 503, .. })
        ));
        assert_eq!(classify(&answer(503, "<html>")), Verdict::AgentFailed);
        assert_eq!(
            classify(&answer(500, &error("internal"))),
            Verdict::AgentFailed
        );
        assert_eq!(classify(&answer(502, "")), Verdict::AgentFailed);
    }
}
