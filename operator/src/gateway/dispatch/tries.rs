//! Sending one request to a pool: pick an agent, try it, and on failure go on to another
//! as the retry policy (`core::policy`) allows; when every agent is saturated or
//! unavailable, wait for one in a queue ordered by priority. What a try is (a stream's
//! first message, a whole answer, an embedding) is the caller's.

use std::net::SocketAddr;
use std::sync::Arc;

use inferpool_protocol::agent::Priority;
use tokio::time::Instant;

use super::pool::{InFlight, Pool};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::{Attempt, ForwardError, ForwardSettings, Tried, Tries};
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::view::NoAgent;

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

/// Calls `attempt` (with the request's slot on a picked agent and the agent's HTTP
/// address) until one succeeds or the retry policy gives up.
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
        let (slot, http) = next_agent(&mut tries, pool, settings, ask).await?;
        let id = slot.agent().to_owned();
        match attempt(slot, http).await {
            Ok(value) => return Ok(tries.done(value)),
            Err(failed) => tries.learn(budget, settings, id, failed, |id, busy| {
                pool.with_view(|v| v.turned_away(id, busy));
            })?,
        }
    }
}

/// The next agent's slot, waiting for one if none is free.
async fn next_agent(
    tries: &mut Tries,
    pool: &Arc<Pool>,
    settings: ForwardSettings,
    ask: Ask<'_>,
) -> Result<(InFlight, SocketAddr), ForwardError> {
    if let Ok(chosen) = pick_now(pool, ask.key, ask.rank, &tries.failed) {
        return Ok(chosen);
    }
    if !pool.has_agents() {
        return hold_for_agent(tries, pool, ask).await;
    }
    let waited = Instant::now();
    let until = tries.wait_until(waited, settings, ask.deadline);
    let chosen = wait_for_agent(pool, ask.key, ask.rank, &tries.failed, until).await;
    tries.waited(waited.elapsed());
    chosen.map_err(|e| tries.no_agent(e))
}

/// Holds a request for a pool with no ready agent (scaled to zero, or every agent
/// restarting) until one serves it or its own deadline: holding is what brings an agent
/// (the held count is the scaler's demand), so the queue's shorter wait does not apply.
/// Past the pool's limit of held requests, or the deadline with still no agent, the
/// answer is `Scaling` (503 `pool_scaling`, retry later), never "no such model".
async fn hold_for_agent(
    tries: &mut Tries,
    pool: &Arc<Pool>,
    ask: Ask<'_>,
) -> Result<(InFlight, SocketAddr), ForwardError> {
    let Some(_held) = pool.holding.hold() else {
        return Err(ForwardError::Scaling);
    };
    let waited = Instant::now();
    let chosen = wait_for_agent(pool, ask.key, ask.rank, &tries.failed, ask.deadline).await;
    tries.waited(waited.elapsed());
    chosen.map_err(|e| {
        if pool.has_agents() {
            tries.no_agent(e)
        } else {
            ForwardError::Scaling
        }
    })
}

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
