//! One pool at run time: its view of the agents (see `core::view`), per agent a tonic
//! channel and a load subscription feeding the view, the pooled client for whole answers,
//! and the requests waiting for a free agent. A request's slot on its agent is an
//! `InFlight` guard, given back however the request ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::held::Holding;
use crate::gateway::core::pick::{Reported, RequestKey};
use crate::gateway::core::view::{Endpoint, NoAgent, Outcome, PoolView};
use crate::gateway::upstream::channel::{UpstreamSettings, agent_channel};
use crate::gateway::upstream::load::{LoadSink, follow_load};
use crate::gateway::upstream::whole::WholeClient;

/// One pool: its view of the agents, their links, and who waits for them.
#[derive(Debug)]
pub struct Pool {
    /// The served model name (`model` in requests).
    pub model: String,
    view: Mutex<PoolView>,
    links: Mutex<HashMap<String, AgentLink>>,
    upstream: UpstreamSettings,
    /// The client of the agents' HTTP APIs (whole answers).
    pub whole: WholeClient,
    /// Signalled on every report and finished request: queued requests look again.
    pub changed: Notify,
    /// Requests waiting for a free agent, per priority rank (0 = critical .. 3 = low).
    waiting: Mutex<[u32; 4]>,
    /// The embedding model its agents report serving.
    embedding_model: Mutex<Option<String>>,
    /// Requests held while it has no ready agent.
    pub holding: Holding,
}

/// One agent's channel and load subscription.
#[derive(Debug)]
struct AgentLink {
    addr: SocketAddr,
    channel: Channel,
    /// Told when its connection broke (dead or frozen): calls that have no other
    /// liveness check give up on it.
    gone: Arc<Notify>,
    watch: JoinHandle<()>,
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        // The subscription holds the channel's connection open: it ends with the link.
        self.watch.abort();
    }
}

/// Counts one request waiting at `rank` until dropped.
#[derive(Debug)]
pub struct Waiting<'a> {
    pool: &'a Pool,
    rank: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.pool.waiting.lock() {
            w[self.rank] = w[self.rank].saturating_sub(1);
        }
        // A more urgent request leaving may unblock less urgent ones.
        self.pool.changed.notify_waiters();
        self.pool.holding.announce();
    }
}

/// A request picked onto an agent: its slot there, held from the pick until the request
/// ends however it ends (an answer, a failure, a client that leaves, a deadline). Dropping
/// it gives the slot back and tells the agent's breaker the outcome; until an outcome is
/// set it is `Cancelled`, which counts for nothing.
#[derive(Debug)]
pub struct InFlight {
    pool: Arc<Pool>,
    agent: String,
    outcome: Outcome,
}

impl InFlight {
    /// The agent it is on.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Its pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How the request ended, as the breaker will learn it when this is dropped.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The agent answered (its first message): the breaker learns it now, and the request
    /// counts as a success unless it fails later.
    pub fn answered(&mut self) {
        self.pool.with_view(|v| v.answered(&self.agent));
        self.outcome = Outcome::Success;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.pool.finished(&self.agent, self.outcome);
    }
}

impl Pool {
    /// A pool serving `model` with no agents yet.
    pub fn new(model: String, view: PoolView, upstream: UpstreamSettings) -> Arc<Self> {
        Self::holding(model, view, upstream, Holding::default())
    }

    /// The same, holding requests while it has no agent as `holding` says.
    pub fn holding(
        model: String,
        view: PoolView,
        upstream: UpstreamSettings,
        holding: Holding,
    ) -> Arc<Self> {
        Arc::new(Self {
            model,
            view: Mutex::new(view),
            links: Mutex::new(HashMap::new()),
            whole: WholeClient::new(&upstream),
            upstream,
            changed: Notify::new(),
            waiting: Mutex::new([0; 4]),
            embedding_model: Mutex::new(None),
            holding,
        })
    }

    /// The embedding model its agents serve, once one reported it.
    pub fn embedding_model(&self) -> Option<String> {
        self.embedding_model.lock().ok()?.clone()
    }

    fn learn_embedding_model(&self, name: &str) {
        if name.is_empty() {
            return;
        }
        if let Ok(mut known) = self.embedding_model.lock()
            && known.as_deref() != Some(name)
        {
            *known = Some(name.to_owned());
        }
    }

    /// Whether it has agents (ready ones, as discovery found them), reported yet or not.
    pub fn has_agents(&self) -> bool {
        self.with_view(|v| v.has_agents()).unwrap_or(false)
    }

    /// Runs `f` on the view.
    pub fn with_view<T>(&self, f: impl FnOnce(&mut PoolView) -> T) -> Option<T> {
        self.view.lock().ok().map(|mut v| f(&mut v))
    }

    /// Replaces the agents: new ones get a channel and a load subscription, gone ones lose
    /// theirs (which closes their connections).
    pub fn set_endpoints(self: &Arc<Self>, endpoints: &[Endpoint]) {
        self.with_view(|v| v.set_endpoints(endpoints));
        let Ok(mut links) = self.links.lock() else {
            return;
        };
        links.retain(|id, link| endpoints.iter().any(|e| &e.id == id && e.grpc == link.addr));
        for e in endpoints {
            if !links.contains_key(&e.id)
                && let Some(link) = self.link(e)
            {
                links.insert(e.id.clone(), link);
            }
        }
        self.changed.notify_waiters();
    }

    fn link(self: &Arc<Self>, e: &Endpoint) -> Option<AgentLink> {
        let channel = agent_channel(e.grpc, &self.upstream)
            .inspect_err(|err| tracing::warn!(agent = %e.id, error = %err, "no channel"))
            .ok()?;
        let watch = tokio::spawn(follow_load(
            Arc::downgrade(self),
            e.id.clone(),
            channel.clone(),
        ));
        Some(AgentLink {
            addr: e.grpc,
            channel,
            gone: Arc::default(),
            watch,
        })
    }

    /// Closes every agent link (the gateway stops): their connections close now rather
    /// than when the last request lets go of the pool.
    pub fn close(&self) {
        if let Ok(mut links) = self.links.lock() {
            links.clear();
        }
    }

    /// Picks an agent for `key`, not one of `exclude`: its slot (held until dropped) and
    /// its HTTP address.
    pub fn pick(
        self: &Arc<Self>,
        key: &RequestKey<'_>,
        exclude: &[String],
    ) -> Result<(InFlight, SocketAddr), NoAgent> {
        let (agent, http) = self
            .with_view(|v| v.choose(key, exclude))
            .unwrap_or(Err(NoAgent::NoneHealthy))?;
        let slot = InFlight {
            pool: self.clone(),
            agent,
            outcome: Outcome::Cancelled,
        };
        Ok((slot, http))
    }

    /// Registers a request of priority `rank` as waiting for an agent.
    pub fn wait_at(&self, rank: usize) -> Waiting<'_> {
        let rank = rank.min(3);
        if let Ok(mut w) = self.waiting.lock() {
            w[rank] += 1;
        }
        self.holding.announce();
        Waiting { pool: self, rank }
    }

    /// Requests waiting at the gateway for an agent: for a free one (every agent busy), or
    /// for any (held: the pool has none). The scalers' demand.
    pub fn waiting(&self) -> u32 {
        self.waiting.lock().map_or(0, |w| w.iter().sum())
    }

    /// Whether requests more urgent than `rank` are waiting (they go first).
    pub fn more_urgent_waiting(&self, rank: usize) -> bool {
        self.waiting
            .lock()
            .is_ok_and(|w| w[..rank.min(4)].iter().any(|&n| n > 0))
    }

    /// The channel to agent `id`, and its signal of a broken connection.
    pub fn channel(&self, id: &str) -> Option<(Channel, Arc<Notify>)> {
        let links = self.links.lock().ok()?;
        let link = links.get(id)?;
        Some((link.channel.clone(), link.gone.clone()))
    }

    /// A request on `id` ended.
    pub fn finished(&self, id: &str, outcome: Outcome) {
        self.with_view(|v| v.finished(id, outcome));
        self.changed.notify_waiters();
    }
}

impl LoadSink for Pool {
    fn rejoined(&self, id: &str) {
        self.with_view(|v| v.rejoined(id));
    }

    fn report(&self, id: &str, reported: Reported, draining: bool, embedding_model: &str) {
        self.learn_embedding_model(embedding_model);
        self.with_view(|v| v.report(id, reported, draining));
        self.changed.notify_waiters();
    }

    fn lost(&self, id: &str, broken: bool) {
        self.with_view(|v| v.lost(id));
        if broken && let Some((_, gone)) = self.channel(id) {
            gone.notify_waiters();
        }
        self.changed.notify_waiters();
    }
}
