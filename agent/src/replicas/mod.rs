//! Data-parallel replicas of the model inside one agent: one engine (with its own batcher)
//! per device, requests spread over them by load and device health. A supervisor reacts
//! to faults: a failed device's unstarted requests move to a healthy one, its running ones
//! end with an error, a replacement replica is placed where there is room, and the device
//! is retried after its backoff.

mod launch;
mod monitor;
pub mod route;
mod state;
mod supervisor;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, watch};

pub use self::launch::{LaunchSettings, Launcher, candle_device};
pub use self::state::DeviceStatus;
use self::state::PoolState;
use self::supervisor::Event;
use crate::generation::{GenerationEvent, GenerationRequest};
use crate::gpu::Inventory;
use crate::gpu::health::HealthThresholds;
use crate::gpu::memory::{Budget, MemoryPool};
use crate::scheduler::batcher::{EngineHandle, Load, SubmitError};
use crate::scheduler::handle::{Refused, Unstarted};

/// Chunks of the device memory pool.
pub const CHUNK_BYTES: u64 = 64 << 20;

/// How many stopped replicas one request may meet before it is refused.
const MAX_TRIES: usize = 8;

/// The replicas: a cheap handle.
#[derive(Debug, Clone)]
pub struct EnginePool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<PoolState>,
    load: watch::Sender<Load>,
    events: mpsc::Sender<Event>,
}

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

impl EnginePool {
    /// Places and starts every replica (loading and warming up the model on each device),
    /// then supervises them. Fails when not even one replica starts.
    pub async fn start(settings: PoolSettings, launcher: Launcher) -> anyhow::Result<Self> {
        let memory = MemoryPool::new(&settings.budgets, CHUNK_BYTES);
        let (events, receiver) = mpsc::channel(256);
        let state = PoolState::new(&settings, memory);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            load: watch::Sender::new(Load::default()),
            events,
        });
        let pool = Self { inner };
        let started = supervisor::start_all(&pool, &launcher, settings.replicas).await;
        anyhow::ensure!(
            started > 0,
            "no replica of the model could start on any device"
        );
        monitor::spawn(&pool, &settings);
        tokio::spawn(supervisor::run(
            pool.clone(),
            launcher,
            settings.thresholds,
            receiver,
        ));
        Ok(pool)
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `request` on the replica routing picks; events arrive on the receiver.
    pub async fn generate(
        &self,
        request: GenerationRequest,
    ) -> Result<mpsc::Receiver<GenerationEvent>, SubmitError> {
        let (work, receiver) = Unstarted::new(request);
        self.submit(work).await.map_err(|r| r.error)?;
        Ok(receiver)
    }

    /// Queues a request whose client holds its receiver, trying another replica when the
    /// picked one turns out to have stopped.
    pub async fn submit(&self, mut work: Unstarted) -> Result<(), Refused> {
        for _ in 0..MAX_TRIES {
            let Some(engine) = self.pick() else {
                return Err(Refused {
                    error: SubmitError::NoHealthyDevice,
                    work: Some(work),
                });
            };
            match engine.submit(work).await {
                Ok(()) => return Ok(()),
                Err(Refused {
                    error: SubmitError::Stopped,
                    work: Some(back),
                }) => work = back,
                Err(refused) => return Err(refused),
            }
        }
        Err(Refused {
            error: SubmitError::Stopped,
            work: Some(work),
        })
    }

    fn pick(&self) -> Option<EngineHandle> {
        self.state().pick()
    }

    /// All replicas' load together.
    pub fn load(&self) -> watch::Receiver<Load> {
        self.inner.load.subscribe()
    }

    fn publish_load(&self) {
        let load = self.state().load();
        self.inner
            .load
            .send_if_modified(|l| std::mem::replace(l, load) != load);
    }

    /// Tells load watchers that something changed (health, replicas) even if the load did
    /// not.
    fn publish_change(&self) {
        let load = self.state().load();
        self.inner.load.send_replace(load);
    }

    /// Every device's health, memory and readings.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.state().statuses()
    }

    /// Whether any replica may take requests.
    pub fn schedulable(&self) -> bool {
        self.state().schedulable()
    }

    /// Most tokens a request may hold on every replica (its KV budget).
    pub fn capacity_tokens(&self) -> usize {
        self.state().capacity_tokens()
    }

    /// Makes the engine on `device` fail its next `steps` steps (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_step_fault(
        &self,
        device: usize,
        fault: crate::scheduler::faults::StepFault,
        steps: u32,
    ) -> bool {
        self.state()
            .faults(device)
            .map(|f| f.inject(fault, steps))
            .is_some()
    }

    /// Takes `telemetry` as `device`'s next NVML reading (tests only).
    #[cfg(feature = "fault-injection")]
    pub async fn inject_reading(&self, device: usize, telemetry: crate::gpu::telemetry::Telemetry) {
        let _ = self
            .inner
            .events
            .send(Event::Reading { device, telemetry })
            .await;
    }
}
