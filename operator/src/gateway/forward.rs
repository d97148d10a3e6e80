//! Sending one request to a pool: pick an agent, call `Generate`, and retry on another
//! agent while nothing has been streamed (within the retry budget); when every agent is
//! saturated or unavailable, wait for one in a bounded queue until the deadline. Once the
//! first message arrived the request is committed to its agent and never duplicated.

use std::sync::Arc;
use std::time::Duration;

use inferpool_protocol::agent::{ErrorInfo, GenerateRequest, GenerateResponse, Priority};
use prost::Message as _;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::agents::Pool;
use super::connection::AgentConnection;
use super::pick::RequestKey;
use super::pool::{Busy, NoAgent, Outcome};
use super::retry::RetryBudget;
use super::stream::{GenerateStream, generate};

/// Why a request got no answer from the pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No agent could take it before the deadline.
    #[error("every agent is busy; retry later")]
    Saturated,
    /// No agent is up.
    #[error("no agent of this pool is available")]
    Unavailable,
    /// The agent refused it (kept as the agent said: status and type).
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The agent's error type.
        kind: String,
        /// The agent's message.
        message: String,
    },
    /// The request ran past its timeout.
    #[error("the request timed out")]
    Timeout,
}

impl ForwardError {
    /// The stable error type.
    pub fn error_type(&self) -> &str {
        match self {
            Self::Saturated => "pool_saturated",
            Self::Unavailable => "no_healthy_agent",
            Self::Refused { kind, .. } => kind,
            Self::Timeout => "timeout",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Saturated => 429,
            Self::Unavailable => 503,
            Self::Refused { status, .. } => *status,
            Self::Timeout => 504,
        }
    }
}

/// A committed stream: the agent's first message and the rest.
#[derive(Debug)]
pub struct Committed {
    /// The agent it runs on.
    pub agent: String,
    /// Its first message.
    pub first: GenerateResponse,
    /// The rest of the stream.
    pub rest: GenerateStream,
}

/// A request on its way: the committed stream, and how it got there.
pub type Forwarded = Tried<Committed>;

/// How one pool forwards.
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    /// Most retries of one request.
    pub max_retries: u32,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
}

/// Sends `request` to the pool until an agent streams its first message.
pub async fn forward(
    pool: &Arc<Pool>,
    budget: &RetryBudget,
    settings: ForwardSettings,
    request: &GenerateRequest,
    key: &RequestKey<'_>,
) -> Result<Forwarded, ForwardError> {
    let rank = priority_rank(request.priority());
    try_agents(pool, budget, settings, rank, key, |id, _| {
        attempt(pool, id, request)
    })
    .await
}

/// What one agent answered, and how it got there.
#[derive(Debug)]
pub struct Tried<T> {
    /// The answer.
    pub value: T,
    /// Agents tried before.
    pub retries: u32,
    /// Time spent waiting for a free agent.
    pub queue_wait: Duration,
}

/// Calls `attempt` (with the agent's id and HTTP address) on agents picked for `key` until
/// one succeeds: after a failure on another agent while the budget allows, after a busy
/// agent's refusal on another or once one is free, waiting for a free agent until the
/// queue deadline.
pub async fn try_agents<T, F, Fut>(
    pool: &Pool,
    budget: &RetryBudget,
    settings: ForwardSettings,
    rank: usize,
    key: &RequestKey<'_>,
    mut attempt: F,
) -> Result<Tried<T>, ForwardError>
where
    F: FnMut(String, std::net::SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    budget.deposit();
    let mut queue_wait = Duration::ZERO;
    let mut failed: Vec<String> = Vec::new();
    let mut turned_away = 0;
    let mut last_error = None;
    // Read the clock only for requests that wait (most find an agent at once).
    let mut deadline = None;
    loop {
        let chosen = match pick_now(pool, key, rank, &failed) {
            Ok(chosen) => Ok(chosen),
            Err(_) => {
                let waited = Instant::now();
                let until = *deadline.get_or_insert(waited + settings.queue_wait);
                let chosen = wait_for_agent(pool, key, rank, &failed, until).await;
                queue_wait += waited.elapsed();
                chosen
            }
        };
        let (id, http) = chosen.map_err(|e| last_error.take().unwrap_or(e))?;
        let error = match attempt(id.clone(), http).await {
            Ok(value) => {
                let retries = u32::try_from(failed.len()).map_or(u32::MAX, |f| f + turned_away);
                return Ok(Tried {
                    value,
                    retries,
                    queue_wait,
                });
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            // Neither the agent's failure nor load that a retry adds: no budget is spent, and
            // the agent is passed over until its next report (see `PoolView::turned_away`).
            Err(Attempt::Busy(busy, e)) => {
                pool.with_view(|v| v.turned_away(&id, busy));
                turned_away += 1;
                if turned_away > TURNED_AWAY_LIMIT {
                    return Err(e);
                }
                e
            }
            Err(Attempt::Retryable(e)) => {
                failed.push(id);
                if failed.len() as u32 > settings.max_retries || !budget.try_withdraw() {
                    return Err(e);
                }
                e
            }
        };
        last_error = Some(error);
    }
}

/// Most times one request is turned away by busy agents. Each refusal keeps its agent out
/// until the agent reports again, so this is reached only when reports keep contradicting
/// refusals.
const TURNED_AWAY_LIMIT: u32 = 8;

/// Picks an agent, waiting for a report or a finished request to free one, until
/// `deadline`.
/// (The wait is ordered by priority: while more urgent requests wait, less urgent ones
/// keep waiting.)
pub async fn wait_for_agent(
    pool: &Pool,
    key: &RequestKey<'_>,
    rank: usize,
    exclude: &[String],
    deadline: Instant,
) -> Result<(String, std::net::SocketAddr), ForwardError> {
    let mut waiting = None;
    loop {
        let changed = pool.changed.notified();
        let error = match pick_now(pool, key, rank, exclude) {
            Ok(chosen) => return Ok(chosen),
            Err(NoAgent::Saturated) => ForwardError::Saturated,
            Err(NoAgent::NoneHealthy) => ForwardError::Unavailable,
        };
        waiting.get_or_insert_with(|| pool.wait_at(rank));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(error);
        }
    }
}

/// An agent for `key` now, unless more urgent requests wait or none is free.
fn pick_now(
    pool: &Pool,
    key: &RequestKey<'_>,
    rank: usize,
    exclude: &[String],
) -> Result<(String, std::net::SocketAddr), NoAgent> {
    if pool.more_urgent_waiting(rank) {
        return Err(NoAgent::Saturated);
    }
    pool.with_view(|v| v.choose(key, exclude))
        .unwrap_or(Err(NoAgent::NoneHealthy))
}

/// 0 for critical .. 3 for low (unspecified is normal).
pub fn priority_rank(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Unspecified | Priority::Normal => 2,
        Priority::Low => 3,
    }
}

/// Why one try failed.
#[derive(Debug)]
pub enum Attempt {
    /// The agent is healthy but turned it away (full queue, draining): another may take it.
    Busy(Busy, ForwardError),
    /// The agent failed: try another, within the retry budget.
    Retryable(ForwardError),
    /// The request itself was refused: answer so.
    Fatal(ForwardError),
}

/// A connection to agent `id`, or a retryable failure.
pub async fn connection_to(pool: &Pool, id: &str) -> Result<AgentConnection, Attempt> {
    pool.connection(id).await.ok_or_else(|| {
        pool.finished(id, Outcome::Failure);
        Attempt::Retryable(ForwardError::Unavailable)
    })
}

/// One try on agent `id`: the call and its first message.
async fn attempt(pool: &Pool, id: String, request: &GenerateRequest) -> Result<Committed, Attempt> {
    let id = id.as_str();
    let connection = connection_to(pool, id).await?;
    let first = match generate(&connection, request).await {
        Ok(mut rest) => rest.message().await.map(|m| (m, rest)),
        Err(status) => Err(status),
    };
    match first {
        Ok((Some(first), rest)) => Ok(Committed {
            agent: id.to_owned(),
            first,
            rest,
        }),
        Ok((None, _)) => {
            pool.finished(id, Outcome::Failure);
            Err(Attempt::Retryable(ForwardError::Unavailable))
        }
        Err(status) => Err(classify(pool, id, &status)),
    }
}

/// Whether a refusal is the agent's verdict on the request (returned as is) or the
/// agent's own trouble (retried elsewhere).
pub fn classify(pool: &Pool, id: &str, status: &Status) -> Attempt {
    let error = refused(status);
    match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange => {
            pool.finished(id, Outcome::Success);
            Attempt::Fatal(error)
        }
        // A full queue or a draining agent is healthy: try another, breaker untouched.
        Code::ResourceExhausted if is_typed(status) => {
            pool.finished(id, Outcome::Success);
            Attempt::Busy(Busy::Full, error)
        }
        Code::Unavailable if is_typed(status) => {
            pool.finished(id, Outcome::Success);
            Attempt::Busy(Busy::Draining, error)
        }
        _ => {
            pool.finished(id, Outcome::Failure);
            Attempt::Retryable(ForwardError::Unavailable)
        }
    }
}

fn is_typed(status: &Status) -> bool {
    ErrorInfo::decode(status.details()).is_ok_and(|i| !i.r#type.is_empty())
}

/// The agent's refusal as an HTTP error with its type.
pub fn refused(status: &Status) -> ForwardError {
    let info = ErrorInfo::decode(status.details()).unwrap_or_default();
    let http = match status.code() {
        Code::InvalidArgument => 400,
        Code::NotFound => 404,
        Code::OutOfRange => 413,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 502,
    };
    let kind = if info.r#type.is_empty() {
        "upstream_error".to_owned()
    } else {
        info.r#type
    };
    ForwardError::Refused {
        status: http,
        kind,
        message: status.message().to_owned(),
    }
}

/// Pools for tests.
#[cfg(test)]
pub(super) mod testing {
    use std::net::SocketAddr;

    use super::*;
    use crate::gateway::pick::{Reported, RoundRobin};
    use crate::gateway::pool::{Endpoint, PoolSettings, PoolView};

    /// A round-robin pool of agents `a0`, `a1`, ... at `addrs` (both their gRPC and HTTP
    /// address), each reporting `max_batch_size` slots.
    pub fn round_robin_pool(addrs: &[SocketAddr], max_batch_size: u32) -> Arc<Pool> {
        let settings = PoolSettings {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
        };
        let pool = Pool::new(
            "m".into(),
            PoolView::new(Box::new(RoundRobin::default()), settings),
        );
        let endpoints: Vec<Endpoint> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| Endpoint {
                id: format!("a{i}"),
                grpc: addr,
                http: addr,
            })
            .collect();
        pool.with_view(|v| {
            v.set_endpoints(&endpoints);
            for e in &endpoints {
                let reported = Reported {
                    max_batch_size,
                    ..Reported::default()
                };
                v.report(&e.id, reported, false);
            }
        });
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::testing::round_robin_pool;
    use super::*;

    fn saturated_pool() -> Arc<Pool> {
        let pool = round_robin_pool(&[std::net::SocketAddr::from(([127, 0, 0, 1], 9))], 1);
        pool.with_view(|v| {
            // Two requests in flight saturate an agent with one slot.
            for _ in 0..2 {
                assert!(v.choose(&RequestKey::default(), &[]).is_ok());
            }
        });
        pool
    }

    #[tokio::test]
    async fn a_saturated_pool_serves_waiting_requests_most_urgent_first() {
        let pool = saturated_pool();
        let deadline = Instant::now() + Duration::from_secs(30);
        let low = {
            let pool = pool.clone();
            tokio::spawn(async move {
                wait_for_agent(&pool, &RequestKey::default(), 3, &[], deadline).await
            })
        };
        while !pool.more_urgent_waiting(4) {
            tokio::task::yield_now().await;
        }
        let critical = {
            let pool = pool.clone();
            tokio::spawn(async move {
                wait_for_agent(&pool, &RequestKey::default(), 0, &[], deadline).await
            })
        };
        while !pool.more_urgent_waiting(1) {
            tokio::task::yield_now().await;
        }
        pool.finished("a0", Outcome::Success);
        assert!(
            critical.await.unwrap().is_ok(),
            "the critical request got the free slot"
        );
        assert!(!low.is_finished(), "the low one still waits");
        pool.finished("a0", Outcome::Success);
        assert!(low.await.unwrap().is_ok());
        let expired = wait_for_agent(&pool, &RequestKey::default(), 2, &[], Instant::now()).await;
        assert_eq!(
            expired,
            Err(ForwardError::Saturated),
            "then 429 at the deadline"
        );
    }
}
