//! A pool's agents over gRPC: per agent a `WatchLoad` subscription on a lazily connected
//! channel that feeds its reports into the pool's view (reconnecting with backoff when the
//! stream breaks, the agent marked unreachable meanwhile), and HTTP/2 connections for
//! requests, each worker thread's own (see `workers` and `connection`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use inferpool_protocol::agent::agent_client::AgentClient;
use inferpool_protocol::agent::{LoadReport, WatchLoadRequest};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::connection::{AgentConnection, ConnectionCache};
use super::pick::{Reported, RequestKey};
use super::pool::{Endpoint, NoAgent, Outcome, PoolView};
use super::workers::with_worker_connections;

/// One pool: its view of the agents, their addresses and load subscriptions, and the
/// connections its requests use off worker threads.
#[derive(Debug)]
pub struct Pool {
    /// The served model name (`model` in requests).
    pub model: String,
    view: Mutex<PoolView>,
    links: Mutex<HashMap<String, AgentLink>>,
    /// Connections for requests made off worker threads.
    connections: Mutex<ConnectionCache>,
    /// Signalled on every report and finished request: queued requests look again.
    pub changed: Notify,
    /// Requests waiting for a free agent, per priority rank (0 = critical .. 3 = low).
    waiting: Mutex<[u32; 4]>,
    /// The embedding model its agents report serving.
    embedding_model: Mutex<Option<String>>,
}

/// One agent's address and its load subscription.
#[derive(Debug)]
struct AgentLink {
    addr: SocketAddr,
    watch: JoinHandle<()>,
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
    pub fn new(model: String, view: PoolView) -> Arc<Self> {
        Arc::new(Self {
            model,
            view: Mutex::new(view),
            links: Mutex::new(HashMap::new()),
            connections: Mutex::default(),
            changed: Notify::new(),
            waiting: Mutex::new([0; 4]),
            embedding_model: Mutex::new(None),
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

    /// Runs `f` on the view.
    pub fn with_view<T>(&self, f: impl FnOnce(&mut PoolView) -> T) -> Option<T> {
        self.view.lock().ok().map(|mut v| f(&mut v))
    }

    /// Replaces the agents: new ones get a channel and a load subscription, gone ones lose
    /// theirs.
    pub fn set_endpoints(self: &Arc<Self>, endpoints: &[Endpoint]) {
        self.with_view(|v| v.set_endpoints(endpoints));
        let Ok(mut links) = self.links.lock() else {
            return;
        };
        links.retain(|id, link| {
            let keep = endpoints.iter().any(|e| &e.id == id && e.grpc == link.addr);
            if !keep {
                link.watch.abort();
            }
            keep
        });
        for e in endpoints {
            if links.contains_key(&e.id) {
                continue;
            }
            let Ok(endpoint) = Channel::from_shared(format!("http://{}", e.grpc)) else {
                continue;
            };
            let channel = endpoint
                .connect_timeout(Duration::from_secs(1))
                .connect_lazy();
            let watch = tokio::spawn(watch_load(self.clone(), e.id.clone(), channel));
            let link = AgentLink {
                addr: e.grpc,
                watch,
            };
            links.insert(e.id.clone(), link);
        }
        self.changed.notify_waiters();
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
        Waiting { pool: self, rank }
    }

    /// Whether requests more urgent than `rank` are waiting (they go first).
    pub fn more_urgent_waiting(&self, rank: usize) -> bool {
        self.waiting
            .lock()
            .is_ok_and(|w| w[..rank.min(4)].iter().any(|&n| n > 0))
    }

    /// A connection to agent `id` for requests: the worker thread's own (see `workers`),
    /// or one shared by callers off worker threads; made when there is none open.
    pub async fn connection(&self, id: &str) -> Option<AgentConnection> {
        let addr = self.links.lock().ok()?.get(id)?.addr;
        let cached = with_worker_connections(|c| c.get(addr))
            .unwrap_or_else(|| self.connections.lock().ok()?.get(addr));
        if cached.is_some() {
            return cached;
        }
        let connection = AgentConnection::connect(addr)
            .await
            .inspect_err(|e| tracing::debug!(agent = id, error = %e, "no connection"))
            .ok()?;
        let keep = |c: &mut ConnectionCache| c.insert(addr, connection.clone());
        if with_worker_connections(keep).is_none() {
            keep(&mut *self.connections.lock().ok()?);
        }
        Some(connection)
    }

    /// A request on `id` ended.
    pub fn finished(&self, id: &str, outcome: Outcome) {
        self.with_view(|v| v.finished(id, outcome));
        self.changed.notify_waiters();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(links) = self.links.lock() {
            for link in links.values() {
                link.watch.abort();
            }
        }
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Follows one agent's load reports for as long as the pool keeps it.
async fn watch_load(pool: Arc<Pool>, id: String, channel: Channel) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut client = AgentClient::new(channel.clone());
        if let Ok(response) = client.watch_load(WatchLoadRequest {}).await {
            let mut reports = response.into_inner();
            let mut first = true;
            while let Ok(Some(report)) = reports.message().await {
                backoff = BACKOFF_MIN;
                pool.learn_embedding_model(&report.embedding_model);
                let (reported, draining) = reported(&report);
                pool.with_view(|v| {
                    if std::mem::take(&mut first) {
                        v.rejoined(&id);
                    }
                    v.report(&id, reported, draining);
                });
                pool.changed.notify_waiters();
            }
        }
        pool.with_view(|v| v.lost(&id));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn reported(r: &LoadReport) -> (Reported, bool) {
    let queued = r
        .queued
        .as_ref()
        .map_or(0, |q| q.critical + q.high + q.normal + q.low);
    let kv_usage = f64::from(r.kv_blocks_used) / f64::from(r.kv_blocks_total.max(1));
    let reported = Reported {
        queued,
        running: r.running,
        max_batch_size: r.max_batch_size,
        kv_usage,
    };
    // An agent still loading its model reports no KV blocks yet: not ready for traffic.
    let accepting = !r.draining && r.kv_blocks_total > 0;
    (reported, !accepting)
}
