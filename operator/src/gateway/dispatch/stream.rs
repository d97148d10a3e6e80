//! Streamed requests: `Generate` on a picked agent, retried on another while nothing has
//! been streamed; once the first message arrived the request is committed to its agent
//! and never duplicated.

use std::sync::Arc;

use inferpool_protocol::agent::{GenerateRequest, GenerateResponse};
use tokio::time::Instant;

use super::pool::{InFlight, Pool};
use super::tries::{Ask, priority_rank, try_agents};
use super::verdict::{classify, unreachable};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::{Attempt, ForwardError, ForwardSettings, Tried};
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::view::Outcome;
use crate::gateway::upstream::generate::{GenerateStream, generate};

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

/// Sends `request` to the pool until an agent streams its first message.
pub async fn forward(
    pool: &Arc<Pool>,
    budget: &RetryBudget,
    settings: ForwardSettings,
    request: &GenerateRequest,
    key: &RequestKey<'_>,
    deadline: Instant,
) -> Result<Forwarded, ForwardError> {
    let ask = Ask {
        rank: priority_rank(request.priority()),
        key,
        deadline,
    };
    try_agents(pool, budget, settings, ask, |slot, _| {
        attempt(slot, request, deadline)
    })
    .await
}

/// One try on the agent of `slot`: the call and its first message.
async fn attempt(
    mut slot: InFlight,
    request: &GenerateRequest,
    deadline: Instant,
) -> Result<Committed, Attempt> {
    let Some((channel, _)) = slot.pool().channel(slot.agent()) else {
        return Err(unreachable(slot));
    };
    let first = match generate(&channel, request.clone(), deadline).await {
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

/// Pools for tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::gateway::core::pick::{Reported, RoundRobin};
    use crate::gateway::core::view::{Endpoint, PoolSettings, PoolView};
    use crate::gateway::upstream::channel::UpstreamSettings;

    /// A round-robin pool of agents `a0`, `a1`, ... at `addrs` (both their gRPC and HTTP
    /// address), each reporting `max_batch_size` slots.
    pub fn round_robin_pool(addrs: &[SocketAddr], max_batch_size: u32) -> Arc<Pool> {
        let settings = PoolSettings {
            failure_threshold: 3,
            cooldown: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
        };
        let view = PoolView::new(Box::new(RoundRobin::default()), settings);
        let pool = Pool::new("m".into(), view, UpstreamSettings::default());
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
