//! Sending one request to a pool: pick an agent, call `Generate`, and retry on another
//! agent while nothing has been streamed; when every agent is saturated or unavailable,
//! wait for one in a bounded queue. Once the first message arrived the request is
//! committed to its agent and never duplicated.
//!
//! Two kinds of failure are told apart. An agent that was lost (unreachable, or its
//! connection broke: it died) leaves its requests to the others: moving them adds no load,
//! so they are retried whatever the retry budget, and wait for a free agent until their
//! own deadline rather than the queue's. An agent that answered with an error is the kind
//! of failure that retries multiply: those retries are bounded per request
//! (`max_retries`, never twice on one agent) and across the pool (the retry budget), and
//! the agent's breaker opens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use inferpool_protocol::agent::{ErrorInfo, GenerateRequest, GenerateResponse, Priority};
use prost::Message as _;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::agents::{InFlight, Pool};
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
    /// Its slot on the agent it runs on (held until the stream ends).
    pub in_flight: InFlight,
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
    /// Most retries of one request after agents answered errors.
    pub max_retries: u32,
    /// Longest a request waits for a free agent (before it was taken by one).
    pub queue_wait: Duration,
}

/// What a request asks of its pool besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Its priority rank (0 = critical .. 3 = low).
    pub rank: usize,
    /// What the pickers may use.
    pub key: &'a RequestKey<'a>,
    /// When the request times out.
    pub deadline: Instant,
}

/// Sends `request` to the pool until an agent streams its first message.
pub async fn forward(
    pool: &Arc<Pool>,
    budget: &RetryBudget,
    settings: ForwardSettings,
    request: &GenerateRequest,
    key: &RequestKey<'_>,
    deadline: Instant,
) -> Result<Forwarded, ForwardError> {
    let rank = priority_rank(request.priority());
    let ask = Ask {
        rank,
        key,
        deadline,
    };
    try_agents(pool, budget, settings, ask, |slot, _| {
        attempt(slot, request)
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

/// Calls `attempt` (with the request's slot on a picked agent and the agent's HTTP
/// address) until one succeeds: after a lost agent on another, after an agent's error on
/// another while the request's retries and the budget allow, after a busy agent's refusal
/// on another or once one is free; waiting for a free agent until the queue deadline, or
/// once an agent was lost under the request, until its own deadline.
pub async fn try_agents<T, F, Fut>(
    pool: &Arc<Pool>,
    budget: &RetryBudget,
    settings: ForwardSettings,
    ask: Ask<'_>,
    mut attempt: F,
) -> Result<Tried<T>, ForwardError>
where
    F: FnMut(InFlight, SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    budget.deposit();
    let mut tries = Tries::default();
    loop {
        let (slot, http) = tries.next_agent(pool, settings, ask).await?;
        let id = slot.agent().to_owned();
        match attempt(slot, http).await {
            Ok(value) => return Ok(tries.done(value)),
            Err(failed) => tries.learn(pool, budget, settings, id, failed)?,
        }
    }
}

/// What one request went through so far.
#[derive(Debug, Default)]
struct Tries {
    /// Agents that answered it with an error (never tried again).
    failed: Vec<String>,
    /// Agents lost under it.
    lost: u32,
    /// Busy agents' refusals.
    turned_away: u32,
    last_error: Option<ForwardError>,
    queue_wait: Duration,
    /// When its wait in the queue ends (read from the clock only once it waits: most
    /// requests find an agent at once).
    queue_until: Option<Instant>,
}

impl Tries {
    /// The next agent's slot, waiting for one if none is free.
    async fn next_agent(
        &mut self,
        pool: &Arc<Pool>,
        settings: ForwardSettings,
        ask: Ask<'_>,
    ) -> Result<(InFlight, SocketAddr), ForwardError> {
        let chosen = match pick_now(pool, ask.key, ask.rank, &self.failed) {
            Ok(chosen) => Ok(chosen),
            Err(_) => {
                let waited = Instant::now();
                let queue_until = *self.queue_until.get_or_insert(waited + settings.queue_wait);
                // An agent already took it and was lost: it is the pool's to finish.
                let until = if self.lost > 0 {
                    ask.deadline
                } else {
                    queue_until
                };
                let chosen = wait_for_agent(pool, ask.key, ask.rank, &self.failed, until).await;
                self.queue_wait += waited.elapsed();
                chosen
            }
        };
        chosen.map_err(|e| self.last_error.take().unwrap_or(e))
    }

    fn done<T>(self, value: T) -> Tried<T> {
        let tried = self.failed.len() as u64 + u64::from(self.lost + self.turned_away);
        Tried {
            value,
            retries: u32::try_from(tried).unwrap_or(u32::MAX),
            queue_wait: self.queue_wait,
        }
    }

    /// Learns from a failed try on agent `id`: the error to answer with now, or `Ok` to try
    /// again.
    fn learn(
        &mut self,
        pool: &Pool,
        budget: &RetryBudget,
        settings: ForwardSettings,
        id: String,
        failed: Attempt,
    ) -> Result<(), ForwardError> {
        let error = match failed {
            Attempt::Fatal(e) => return Err(e),
            // Neither the agent's failure nor load that a retry adds: no budget is spent, and
            // the agent is passed over until its next report (see `PoolView::turned_away`).
            Attempt::Busy(busy, e) => {
                pool.with_view(|v| v.turned_away(&id, busy));
                self.turned_away += 1;
                if self.turned_away > TURNED_AWAY_LIMIT {
                    return Err(e);
                }
                e
            }
            // Out of rotation until it reports again (see `Outcome::Lost`).
            Attempt::Lost(e) => {
                self.lost += 1;
                if self.lost > LOST_LIMIT {
                    return Err(e);
                }
                e
            }
            Attempt::Retryable(e) => {
                self.failed.push(id);
                let retries = self.failed.len() as u64;
                if retries > u64::from(settings.max_retries) || !budget.try_withdraw() {
                    return Err(e);
                }
                e
            }
        };
        self.last_error = Some(error);
        Ok(())
    }
}

/// Most times one request is turned away by busy agents. Each refusal keeps its agent out
/// until the agent reports again, so this is reached only when reports keep contradicting
/// refusals.
const TURNED_AWAY_LIMIT: u32 = 8;

/// Most agents lost under one request before it fails: agents die and are replaced, and
/// a request moves off each one that dies under it, but one that every agent it reaches
/// dies of is not sent on to kill more.
const LOST_LIMIT: u32 = 3;

/// Picks an agent, waiting for a report or a finished request to free one, until
/// `deadline`; fails at once when the request failed on every healthy agent.
/// (The wait is ordered by priority: while more urgent requests wait, less urgent ones
/// keep waiting.)
pub async fn wait_for_agent(
    pool: &Arc<Pool>,
    key: &RequestKey<'_>,
    rank: usize,
    exclude: &[String],
    deadline: Instant,
) -> Result<(InFlight, SocketAddr), ForwardError> {
    let mut waiting = None;
    loop {
        let changed = pool.changed.notified();
        let error = match pick_now(pool, key, rank, exclude) {
            Ok(chosen) => return Ok(chosen),
            Err(NoAgent::Saturated) => ForwardError::Saturated,
            Err(NoAgent::NoneHealthy) => ForwardError::Unavailable,
            Err(NoAgent::Exhausted) => return Err(ForwardError::Unavailable),
        };
        waiting.get_or_insert_with(|| pool.wait_at(rank));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return Err(error);
        }
    }
}

/// An agent for `key` now, unless more urgent requests wait or none is free.
fn pick_now(
    pool: &Arc<Pool>,
    key: &RequestKey<'_>,
    rank: usize,
    exclude: &[String],
) -> Result<(InFlight, SocketAddr), NoAgent> {
    if pool.more_urgent_waiting(rank) {
        return Err(NoAgent::Saturated);
    }
    pool.pick(key, exclude)
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
    /// The agent is gone (unreachable, or its connection broke): another takes it.
    Lost(ForwardError),
    /// The agent failed: try another, within the request's retries and the budget.
    Retryable(ForwardError),
    /// The request itself was refused: answer so.
    Fatal(ForwardError),
}

/// A connection to the agent of `slot`, or the agent is lost.
pub async fn connection_to(slot: &mut InFlight) -> Result<AgentConnection, Attempt> {
    let connection = slot.pool().connection(slot.agent()).await;
    connection.ok_or_else(|| {
        slot.set_outcome(Outcome::Lost);
        Attempt::Lost(ForwardError::Unavailable)
    })
}

/// One try on the agent of `slot`: the call and its first message.
async fn attempt(mut slot: InFlight, request: &GenerateRequest) -> Result<Committed, Attempt> {
    let connection = connection_to(&mut slot).await?;
    let first = match generate(&connection, request).await {
        Ok(mut rest) => rest.message().await.map(|m| (m, rest)),
        Err(status) => Err(status),
    };
    match first {
        Ok((Some(first), rest)) => {
            slot.answered();
            Ok(Committed {
                in_flight: slot,
                first,
                rest,
            })
        }
        Ok((None, _)) => {
            slot.set_outcome(Outcome::Failure);
            Err(Attempt::Retryable(ForwardError::Unavailable))
        }
        Err(status) => Err(classify(slot, &status)),
    }
}

/// Whether a refusal is the agent's verdict on the request (returned as is), the agent's
/// own trouble (retried elsewhere), or the agent gone; its slot learns which.
pub fn classify(mut slot: InFlight, status: &Status) -> Attempt {
    let error = refused(status);
    let typed = is_typed(status);
    let (outcome, attempt) = match status.code() {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange => {
            (Outcome::Success, Attempt::Fatal(error))
        }
        // A full queue or a draining agent is healthy: try another, breaker untouched.
        Code::ResourceExhausted if typed => (Outcome::Success, Attempt::Busy(Busy::Full, error)),
        Code::Unavailable if typed => (Outcome::Success, Attempt::Busy(Busy::Draining, error)),
        // The agent types every status it sends: an untyped "unavailable" is the
        // connection's (refused, reset, closed under the call).
        Code::Unavailable => (Outcome::Lost, Attempt::Lost(ForwardError::Unavailable)),
        _ => (
            Outcome::Failure,
            Attempt::Retryable(ForwardError::Unavailable),
        ),
    };
    slot.set_outcome(outcome);
    attempt
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
