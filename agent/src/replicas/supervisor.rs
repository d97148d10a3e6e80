//! The pool's supervisor: one task that owns every decision about replicas. It hears of
//! engines that stopped, NVML readings and finished launches, and answers: a failed
//! device's unstarted requests go to healthy replicas, a replacement is placed where there
//! is room, and after the backoff the device is retried with a fresh replica of its own
//! (which retires the replacement).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::events::{Event, Plan, Purpose};
use super::launch::{Launcher, Started};
use super::monitor;
use super::pool::EnginePool;
use super::state::{PoolState, Replica};
use crate::generation::GenerationEvent;
use crate::gpu::Inventory;
use crate::gpu::health::{HealthState, HealthThresholds, Verdict};
use crate::gpu::memory::{Budget, Need};
use crate::gpu::telemetry::Telemetry;
use crate::scheduler::handle::{EngineExit, Unstarted};

/// What the pool is made of.
#[derive(Debug)]
pub struct PoolSettings {
    /// The devices found.
    pub inventory: Inventory,
    /// Each device's budget, in the inventory's order.
    pub budgets: Vec<Budget>,
    /// Replicas wanted (one per device).
    pub replicas: usize,
    /// When readings degrade or fail a device, and the retry backoff.
    pub thresholds: HealthThresholds,
    /// How often NVML is read.
    pub poll: std::time::Duration,
}

/// Places and starts every replica (loading and warming up the model on each device), then
/// supervises them. Fails when not even one replica starts.
pub async fn start(settings: PoolSettings, launcher: Launcher) -> anyhow::Result<EnginePool> {
    let (pool, events) = EnginePool::new(&settings.inventory.devices, &settings.budgets);
    let started = start_all(&pool, &launcher, settings.replicas).await;
    anyhow::ensure!(
        started > 0,
        "no replica of the model could start on any device"
    );
    monitor::spawn(&pool, &settings.inventory, settings.poll);
    tokio::spawn(run(pool.clone(), launcher, settings.thresholds, events));
    Ok(pool)
}

/// Places and starts `wanted` replicas, each on a device of its own (the best fit among
/// those left); returns how many started.
pub(super) async fn start_all(pool: &EnginePool, launcher: &Launcher, wanted: usize) -> usize {
    let mut started = 0;
    for _ in 0..wanted {
        let plan = {
            let mut s = pool.state();
            let taken: Vec<usize> = s.replicas.iter().map(|r| r.device).collect();
            plan(
                &mut s,
                launcher.need(),
                |d| !taken.contains(&d),
                None,
                Purpose::Initial,
            )
        };
        let Some(plan) = plan else { break };
        pool.state().homes.push(plan.home);
        match launch(pool, launcher, plan).await {
            Ok(()) => started += 1,
            Err(e) => {
                tracing::error!(error = %e, device = plan.placement.device, "replica failed to start")
            }
        }
    }
    pool.publish_change();
    started
}

/// Reserves memory for a replica on an eligible device (`home`: the device it stands in
/// for, by default the one it lands on).
fn plan(
    s: &mut PoolState,
    need: Need,
    eligible: impl Fn(usize) -> bool,
    home: Option<usize>,
    purpose: Purpose,
) -> Option<Plan> {
    let id = s.next_id;
    s.next_id += 1;
    match s.memory.place(id, need, eligible) {
        Ok(placement) => Some(Plan {
            id,
            home: home.unwrap_or(placement.device),
            placement,
            purpose,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "no room for a replica");
            None
        }
    }
}

async fn launch(pool: &EnginePool, launcher: &Launcher, plan: Plan) -> Result<(), String> {
    match start_planned(pool, launcher, plan).await {
        Ok(started) => {
            install(pool, plan, started);
            Ok(())
        }
        Err(e) => {
            pool.state().memory.release(plan.id);
            Err(e)
        }
    }
}

/// Loads and warms up the replica `plan` placed, on its device with the device's faults.
async fn start_planned(
    pool: &EnginePool,
    launcher: &Launcher,
    plan: Plan,
) -> Result<Started, String> {
    let (device, faults) = {
        let s = pool.state();
        let slot = &s.devices[plan.placement.device];
        (slot.device.clone(), slot.faults.clone())
    };
    launcher
        .start(&device, plan.placement.kv_bytes, faults)
        .await
}

/// Puts a started engine into routing and watches for it to stop.
fn install(pool: &EnginePool, plan: Plan, (engine, exit): Started) {
    tokio::spawn(forward_load(pool.clone(), engine.load()));
    tokio::spawn(watch_exit(pool.inner.events.clone(), plan.id, exit));
    tracing::info!(
        replica = plan.id,
        device = plan.placement.device,
        home = plan.home,
        kv_bytes = plan.placement.kv_bytes,
        "replica serving"
    );
    pool.state().replicas.push(Replica {
        id: plan.id,
        device: plan.placement.device,
        home: plan.home,
        engine,
        pending: Default::default(),
    });
    pool.publish_change();
}

async fn forward_load(
    pool: EnginePool,
    mut load: tokio::sync::watch::Receiver<crate::scheduler::batcher::Load>,
) {
    while load.changed().await.is_ok() {
        pool.publish_load();
    }
}

async fn watch_exit(
    events: mpsc::Sender<Event>,
    replica: u32,
    exit: oneshot::Receiver<EngineExit>,
) {
    let exit = exit.await.ok();
    let _ = events.send(Event::Exited { replica, exit }).await;
}

struct Supervisor {
    pool: EnginePool,
    launcher: Arc<Launcher>,
    thresholds: HealthThresholds,
}

/// Runs until the pool is dropped.
pub(super) async fn run(
    pool: EnginePool,
    launcher: Launcher,
    thresholds: HealthThresholds,
    mut events: mpsc::Receiver<Event>,
) {
    let mut s = Supervisor {
        pool,
        launcher: Arc::new(launcher),
        thresholds,
    };
    loop {
        let retry = s.next_retry();
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => s.handle(event),
                None => return,
            },
            () = sleep_until(retry) => s.retry_due(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Exited { replica, exit } => self.exited(replica, exit),
            Event::Reading { device, telemetry } => self.reading(device, telemetry),
            Event::Launched { plan, result } => self.launched(plan, result),
        }
        self.pool.publish_change();
    }

    fn exited(&mut self, id: u32, exit: Option<EngineExit>) {
        let (removed, retired_on) = {
            let mut s = self.pool.state();
            s.memory.release(id);
            (s.remove(id), s.retiring.remove(&id))
        };
        let Some(exit) = exit else {
            return; // a retired replica finished its work
        };
        let device = removed.as_ref().map(|r| r.device).or(retired_on);
        let handed_back = exit.unstarted.len();
        tracing::warn!(replica = id, device, reason = %exit.reason, handed_back, "engine stopped");
        if let Some(device) = device {
            self.device_failed(device, exit.reason);
        }
        self.pool.state().count_moved(device, handed_back);
        tokio::spawn(resubmit(self.pool.clone(), exit.unstarted));
        if let Some(replica) = removed {
            self.replace(replica.home);
        }
    }

    /// Marks `device` failed (if it is not already) and evacuates its other replicas.
    fn device_failed(&mut self, device: usize, reason: String) {
        let evacuate: Vec<_> = {
            let mut s = self.pool.state();
            let slot = &mut s.devices[device];
            slot.health
                .engine_fault(reason.clone(), &self.thresholds, Instant::now());
            let device_kind = slot.device.clone();
            self.launcher.forget(&device_kind);
            s.replicas
                .iter()
                .filter(|r| r.device == device)
                .map(|r| r.engine.clone())
                .collect()
        };
        for engine in evacuate {
            let reason = reason.clone();
            tokio::spawn(async move { engine.evacuate(reason).await });
        }
    }

    fn reading(&mut self, device: usize, telemetry: Telemetry) {
        let failed = {
            let mut s = self.pool.state();
            let Some(slot) = s.devices.get_mut(device) else {
                return;
            };
            if slot.baseline_ecc.is_none() {
                slot.baseline_ecc = telemetry.ecc_uncorrected;
            }
            let verdict = self.thresholds.verdict(&telemetry, slot.baseline_ecc);
            let reason = match &verdict {
                // Errors a failure counted are its own: later readings judge only new
                // ones, so that the device is retried once they stop.
                Verdict::Failed(reason) => {
                    slot.baseline_ecc = telemetry.ecc_uncorrected.or(slot.baseline_ecc);
                    Some(reason.clone())
                }
                _ => None,
            };
            slot.telemetry = Some(telemetry);
            // Every reading is observed (degraded and healthy ones move the state too).
            let just_failed = slot
                .health
                .observe(verdict, &self.thresholds, Instant::now());
            reason.filter(|_| just_failed)
        };
        if let Some(reason) = failed {
            tracing::warn!(device, reason, "device failed its health check");
            self.device_failed(device, reason);
        }
    }

    /// Starts a replica standing in for `home` on another schedulable device with room.
    fn replace(&mut self, home: usize) {
        let plan = {
            let mut s = self.pool.state();
            let ok: Vec<bool> = (0..s.devices.len())
                .map(|d| d != home && s.health(d).schedulable())
                .collect();
            plan(
                &mut s,
                self.launcher.need(),
                |d| ok[d],
                Some(home),
                Purpose::StandIn,
            )
        };
        if let Some(plan) = plan {
            self.spawn_launch(plan);
        }
    }

    fn spawn_launch(&self, plan: Plan) {
        let (pool, launcher) = (self.pool.clone(), self.launcher.clone());
        tokio::spawn(async move {
            let result = start_planned(&pool, &launcher, plan).await;
            let _ = pool
                .inner
                .events
                .send(Event::Launched { plan, result })
                .await;
        });
    }

    fn launched(&mut self, plan: Plan, result: Result<Started, String>) {
        let device = plan.placement.device;
        match result {
            Ok(started) if self.still_wanted(&plan) => {
                if plan.purpose == Purpose::Recovery {
                    self.pool.state().devices[device]
                        .health
                        .recovered(Instant::now());
                    tracing::info!(device, "device recovered");
                    self.retire_stand_ins(plan.home);
                }
                install(&self.pool, plan, started);
            }
            // Things changed while it loaded: dropping the handle ends the idle engine.
            Ok(_unwanted) => {
                tracing::info!(device, purpose = ?plan.purpose, "replica no longer wanted");
                self.pool.state().memory.release(plan.id);
            }
            Err(e) => {
                tracing::warn!(device, error = %e, "replica failed to start");
                let mut s = self.pool.state();
                s.memory.release(plan.id);
                if plan.purpose == Purpose::Recovery {
                    let now = Instant::now();
                    s.devices[device]
                        .health
                        .recovery_failed(e, &self.thresholds, now);
                }
            }
        }
    }

    /// Whether a replica that just finished loading should serve: a recovery only while its
    /// device is still recovering; a stand-in only while its device can serve and its home
    /// has no replica of its own back.
    fn still_wanted(&self, plan: &Plan) -> bool {
        let s = self.pool.state();
        let device = plan.placement.device;
        match plan.purpose {
            Purpose::Initial => true,
            Purpose::Recovery => s.health(device) == HealthState::Recovering,
            Purpose::StandIn => {
                let home_back = s.replicas.iter().any(|r| r.device == plan.home);
                s.health(device).schedulable() && !home_back
            }
        }
    }

    /// Takes the stand-ins for `home` out of routing; they finish what they hold and stop.
    fn retire_stand_ins(&self, home: usize) {
        let mut s = self.pool.state();
        let stand_ins: Vec<(u32, usize)> = s
            .replicas
            .iter()
            .filter(|r| r.home == home && r.device != home)
            .map(|r| (r.id, r.device))
            .collect();
        for (id, device) in stand_ins {
            s.remove(id);
            s.retiring.insert(id, device);
        }
    }

    fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        let s = self.pool.state();
        s.devices
            .iter()
            .filter_map(|d| d.health.retry_in(now))
            .min()
            .map(|wait| now + wait)
    }

    /// Retries every failed device whose backoff passed: a replica of its own, loaded anew.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = {
            let s = self.pool.state();
            (0..s.devices.len())
                .filter(|&d| s.devices[d].health.retry_due(now))
                .collect()
        };
        for device in due {
            let plan = {
                let mut s = self.pool.state();
                s.devices[device].health.begin_recovery();
                if !s.homes.contains(&device) {
                    // No replica of its own to bring back: its readings allow it again.
                    s.devices[device].health.recovered(now);
                    continue;
                }
                plan(
                    &mut s,
                    self.launcher.need(),
                    |d| d == device,
                    Some(device),
                    Purpose::Recovery,
                )
            };
            match plan {
                Some(plan) => self.spawn_launch(plan),
                None => self.pool.state().devices[device].health.recovery_failed(
                    "no room on the device for the model".to_owned(),
                    &self.thresholds,
                    now,
                ),
            }
        }
        self.pool.publish_change();
    }
}

/// Sends requests a stopped engine handed back to healthy replicas; with none left, each
/// ends with an error its client can retry elsewhere (it streamed nothing).
async fn resubmit(pool: EnginePool, unstarted: Vec<Unstarted>) {
    for work in unstarted {
        if let Err(refused) = pool.submit(work).await
            && let Some(work) = refused.work
        {
            let message = format!("moved off a failed device, then refused: {}", refused.error);
            let _ = work.events.try_send(GenerationEvent::Failed(message));
        }
    }
}
