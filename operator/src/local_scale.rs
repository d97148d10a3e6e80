//! Local mode's autoscaler: for each pool with `spec.autoscaling`, starts and stops agent
//! processes as `controller::autoscale` decides from what the in-process gateway sees (the
//! requests it holds for the pool, the load its agents report). It wakes on the gateway's
//! demand signal (a request held for a pool with no agent starts one at once), when a
//! started agent becomes ready, and every second (load and the scale-down delay). An
//! agent joins the pool's route once its `/readyz` answers 200, and leaves it before it is
//! stopped (SIGTERM, then its drain).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{AutoscalingSpec, InferencePool};
use crate::controller::autoscale::{AgentLoad, Autoscaler, Decision, Observation};
use crate::gateway::core::routes::RouteTable as _;
use crate::gateway::core::view::Endpoint;
use crate::gateway::dispatch::gateway::Gateway;
use crate::local_agent::{AgentSlot, supervise, until_stopped};

/// How often the scaler looks again without being woken (load, scale-down delay).
const TICK: Duration = Duration::from_secs(1);
/// After a demand wake, how long the scaler lets a burst arrive before deciding, so that
/// one decision sees all of it.
const BURST: Duration = Duration::from_millis(100);
/// How often a starting agent's `/readyz` is asked.
const READY_POLL: Duration = Duration::from_millis(100);

/// An agent process the scaler started.
struct Running {
    endpoint: Endpoint,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// One autoscaled pool: its agent slots (as many as `maxReplicas`) and those running.
pub(crate) struct ScaledPool {
    name: String,
    model: String,
    spec: AutoscalingSpec,
    slots_per_agent: u32,
    slots: Vec<(AgentSlot, Endpoint)>,
    running: BTreeMap<usize, Running>,
    published: Vec<Endpoint>,
    scaler: Autoscaler,
}

impl ScaledPool {
    /// `pool`, scaled by `spec` over `slots` (prepared configs, one per possible agent).
    pub(crate) fn new(
        pool: &InferencePool,
        spec: AutoscalingSpec,
        slots: Vec<(AgentSlot, Endpoint)>,
    ) -> Self {
        Self {
            name: pool
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| "pool".to_owned()),
            model: crate::controller::names::served_name(pool),
            spec,
            slots_per_agent: u32::try_from(pool.spec.batching.max_batch_size).unwrap_or(1),
            slots,
            running: BTreeMap::new(),
            published: Vec::new(),
            scaler: Autoscaler::default(),
        }
    }

    /// Publishes the ready agents, decides, and starts or stops agents to match.
    fn step(&mut self, gateway: &Gateway, ready: &Arc<Notify>, stopping: &mut JoinSet<()>) {
        self.publish(gateway);
        let Some(seen) = self.observe(gateway) else {
            return;
        };
        let decision = self.scaler.decide(&self.spec, &seen, Instant::now());
        self.log(&seen, decision);
        let to = usize::try_from(decision.replicas)
            .unwrap_or(0)
            .min(self.slots.len());
        // Every agent the decision adds starts now, side by side.
        while self.running.len() < to && self.start_one(ready) {}
        while self.running.len() > to && self.stop_one(gateway, stopping) {}
    }

    /// What the gateway sees of the pool; `None` before it has the pool's route.
    fn observe(&self, gateway: &Gateway) -> Option<Observation> {
        let route = gateway.route(&self.model)?;
        let reports = route.pool.with_view(|v| v.reports()).unwrap_or_default();
        let agents = reports
            .into_iter()
            .map(|r| AgentLoad {
                running: r.running,
                queued: r.queued,
                max_batch_size: r.max_batch_size,
            })
            .collect();
        Some(Observation {
            replicas: i32::try_from(self.running.len()).unwrap_or(i32::MAX),
            agents,
            // Held for any agent (none ready) or for a free one (all busy), as a cluster
            // gateway publishes it.
            held: route.pool.waiting(),
            slots_per_agent: self.slots_per_agent,
        })
    }

    fn log(&self, seen: &Observation, decision: Decision) {
        let (from, to, needed) = (seen.replicas, decision.replicas, decision.needed);
        let reason = decision.reason.as_str();
        if from == to {
            tracing::debug!(pool = %self.name, from, to, reason, needed, held = seen.held, "autoscale");
            return;
        }
        tracing::info!(
            pool = %self.name, from, to, reason, needed, held = seen.held,
            "autoscale {}: {from} -> {to} agents ({reason}, needed {needed})", self.name
        );
    }

    /// Starts the first idle slot's agent; false when every slot runs.
    fn start_one(&mut self, ready: &Arc<Notify>) -> bool {
        let Some(index) = (0..self.slots.len()).find(|i| !self.running.contains_key(i)) else {
            return false;
        };
        let (slot, endpoint) = self.slots[index].clone();
        let (stop, stopped) = watch::channel(false);
        let flag = Arc::new(AtomicBool::new(false));
        tokio::spawn(wait_ready(
            slot.health,
            flag.clone(),
            ready.clone(),
            stopped.clone(),
        ));
        tracing::info!(pool = %self.name, agent = %endpoint.id, "starting agent");
        let task = tokio::spawn(supervise(slot, stopped));
        self.running.insert(
            index,
            Running {
                endpoint,
                ready: flag,
                stop,
                task,
            },
        );
        true
    }

    /// Takes the last started agent out of the route, then stops it (its drain runs in
    /// `stopping`); false when none runs.
    fn stop_one(&mut self, gateway: &Gateway, stopping: &mut JoinSet<()>) -> bool {
        let Some((_, agent)) = self.running.pop_last() else {
            return false;
        };
        self.publish(gateway);
        tracing::info!(pool = %self.name, agent = %agent.endpoint.id, "stopping agent");
        stopping.spawn(stop(agent));
        true
    }

    /// Sets the route's agents to the ready ones, when they changed.
    fn publish(&mut self, gateway: &Gateway) {
        let ready: Vec<Endpoint> = self
            .running
            .values()
            .filter(|r| r.ready.load(Ordering::Acquire))
            .map(|r| r.endpoint.clone())
            .collect();
        if ready != self.published {
            gateway.set_endpoints(&self.model, &ready);
            tracing::info!(pool = %self.name, agents = ready.len(), "routing to ready agents");
            self.published = ready;
        }
    }

    /// Stops every agent (local mode ends).
    fn stop_all(self, stopping: &mut JoinSet<()>) {
        for agent in self.running.into_values() {
            stopping.spawn(stop(agent));
        }
    }
}

/// SIGTERM (through its supervisor), then wait for its drain.
async fn stop(agent: Running) {
    let _ = agent.stop.send(true);
    let _ = agent.task.await;
}

/// Scales `pools` until `stopped`, then stops their agents and waits for their drains.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    mut pools: Vec<ScaledPool>,
    mut stopped: watch::Receiver<bool>,
) {
    if pools.is_empty() {
        return;
    }
    let demand = gateway.demand();
    let ready = Arc::new(Notify::new());
    let mut stopping = JoinSet::new();
    loop {
        for pool in &mut pools {
            pool.step(&gateway, &ready, &mut stopping);
        }
        while stopping.try_join_next().is_some() {}
        tokio::select! {
            () = demand.notified() => tokio::time::sleep(BURST).await,
            () = ready.notified() => {}
            () = tokio::time::sleep(TICK) => {}
            () = until_stopped(&mut stopped) => break,
        }
    }
    for pool in pools {
        pool.stop_all(&mut stopping);
    }
    while stopping.join_next().await.is_some() {}
}

/// Marks an agent ready (and wakes the scaler) once `/readyz` on its plain health port
/// answers 200; gives up when it is stopped first.
async fn wait_ready(
    health: SocketAddr,
    flag: Arc<AtomicBool>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if answers_ready(health).await {
            flag.store(true, Ordering::Release);
            wake.notify_one();
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(READY_POLL) => {}
            () = until_stopped(&mut stopped) => return,
        }
    }
}

/// Whether `GET /readyz` on `health` answers 200 (within a second).
async fn answers_ready(health: SocketAddr) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(health).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        std::io::Result::Ok(head.get(9..12) == Some(b"200".as_slice()))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Ok(true))
    )
}
