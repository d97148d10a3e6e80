//! Whole (not streamed) completions: the client's checked request goes, as the client sent
//! it, to the agent's own OpenAI API (see `upstream::whole`), and the agent's answer comes
//! back as the agent gave it. A streamed answer needs the gateway to see each token (to
//! commit on the first one, and to end a broken stream with an error event), so streams
//! use gRPC; a whole answer needs nothing of the kind. Retries, queueing and the breaker
//! are the same as for streams.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::gateway::PoolRoute;
use super::pool::{InFlight, Pool};
use super::tries::{Ask, try_agents};
use super::verdict::{Verdict, call_failed, judge};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::{Attempt, ForwardError, ForwardSettings, Tried};
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::view::Outcome;
use crate::gateway::upstream::whole::{Answer, CallError, Post};

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
        attempt(slot, http, request, ask.deadline)
    })
    .await
}

async fn attempt(
    mut slot: InFlight,
    http: SocketAddr,
    request: UnaryRequest<'_>,
    deadline: Instant,
) -> Result<Answered, Attempt> {
    let answer = match call(&slot, http, request, deadline).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(agent = slot.agent(), error = %e, "no answer");
            return Err(call_failed(slot, &e));
        }
    };
    let verdict = judge(&answer);
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

/// The call, given up when the agent's connection is seen to break (an HTTP/1.1 call has
/// no liveness check of its own: a frozen agent would hold it until the deadline).
async fn call(
    slot: &InFlight,
    http: SocketAddr,
    request: UnaryRequest<'_>,
    deadline: Instant,
) -> Result<Answer, CallError> {
    let post = Post {
        path: request.path,
        headers: request.headers,
        body: request.body,
    };
    let gone = slot.pool().channel(slot.agent()).map(|(_, gone)| gone);
    let sent = slot.pool().whole.post(http, post, deadline);
    let Some(gone) = gone else { return sent.await };
    tokio::select! {
        answer = sent => answer,
        () = gone.notified() => Err(CallError::Lost("the agent's connection broke".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::gateway::core::pick::Reported;
    use crate::gateway::dispatch::stream::testing::round_robin_pool;
    use crate::gateway::dispatch::verdict::error_of;

    /// A loopback agent (hyper's HTTP/1.1 server) that answers every request with
    /// `status` and `body`, and counts the requests it got.
    async fn agent(status: u16, body: &'static str) -> (SocketAddr, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = seen.clone();
                let answer = service_fn(move |_| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    let response = http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from_static(body.as_bytes())));
                    async move { response }
                });
                let served = http1::Builder::new().serve_connection(TokioIo::new(socket), answer);
                tokio::spawn(served);
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
        let (busy, busy_count) = agent(503, draining).await;
        let (fine, _) = agent(200, r#"{"object":"chat.completion"}"#).await;
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
        let visits = busy_count.load(Ordering::Relaxed);
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
        let (refusing, _) = agent(400, invalid).await;
        let pool = round_robin_pool(&[refusing], 8);
        let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
        let tried = sent.await.unwrap();
        assert_eq!((tried.value.answer.status, tried.retries), (400, 0));
        let kind = error_of(&tried.value.answer.body).map(|(kind, _)| kind);
        assert_eq!(kind.as_deref(), Some("invalid_request_error"));
    }

    #[tokio::test]
    async fn a_full_agent_is_passed_over_without_spending_the_retry_budget() {
        let full = r#"{"error":{"message":"full","type":"queue_full","param":null,"code":null}}"#;
        let (busy, busy_count) = agent(429, full).await;
        let (fine, _) = agent(200, "{}").await;
        let pool = round_robin_pool(&[busy, fine], 8);
        let budget = RetryBudget::new(0);
        while budget.try_withdraw() {}
        let request = request(&BODY);
        for _ in 0..3 {
            let sent = forward_unary_to(&pool, &budget, SETTINGS, request, ask());
            assert_eq!(sent.await.unwrap().value.agent, "a1");
        }
        // Saturated until its next report: one visit, however many requests follow.
        assert_eq!(busy_count.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_unreachable_agent_fails_over_and_counts_against_its_breaker() {
        let (fine, _) = agent(200, "{}").await;
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
}
