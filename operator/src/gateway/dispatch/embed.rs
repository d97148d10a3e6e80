//! Embeddings on a pool: the unary `Embed` call on a picked agent, retried on another
//! agent when it fails (safe: embedding has no side effects).

use inferpool_protocol::agent::{EmbedRequest, EmbedResponse};
use tokio::time::Instant;

use super::gateway::PoolRoute;
use super::pool::InFlight;
use super::tries::{Ask, try_agents};
use super::verdict::{classify, unreachable};
use crate::gateway::core::pick::RequestKey;
use crate::gateway::core::policy::{Attempt, ForwardError, Tried};
use crate::gateway::core::view::Outcome;
use crate::gateway::upstream::generate::embed;

/// Embeds `request` on the pool of `route`: the agent that answered and its vectors.
pub async fn forward_embed(
    route: &PoolRoute,
    request: &EmbedRequest,
    rank: usize,
    deadline: Instant,
) -> Result<Tried<(String, EmbedResponse)>, ForwardError> {
    let key = RequestKey::default();
    let ask = Ask {
        rank,
        key: &key,
        deadline,
    };
    let sent = try_agents(&route.pool, &route.budget, route.forward, ask, |slot, _| {
        embed_on(slot, request, deadline)
    });
    tokio::time::timeout_at(deadline, sent)
        .await
        .unwrap_or_else(|_| Err(route.timed_out()))
}

/// One try on the agent of `slot`; the agent is done with it when the call returns.
async fn embed_on(
    mut slot: InFlight,
    request: &EmbedRequest,
    deadline: Instant,
) -> Result<(String, EmbedResponse), Attempt> {
    let Some((channel, _)) = slot.pool().channel(slot.agent()) else {
        return Err(unreachable(slot));
    };
    match embed(&channel, request.clone(), deadline).await {
        Ok(response) => {
            slot.set_outcome(Outcome::Success);
            Ok((slot.agent().to_owned(), response))
        }
        Err(status) => Err(classify(slot, &status)),
    }
}
