//! The pool's handle: routing requests to replicas, their load together, and the view of
//! every device. What the supervisor decides lands in its state.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, watch};

use super::events::Event;
use super::state::{DeviceStatus, PoolState};
use crate::generation::{GenerationEvent, GenerationRequest};
use crate::gpu::Device;
use crate::gpu::memory::{Budget, MemoryPool};
use crate::scheduler::batcher::{Load, SubmitError};
use crate::scheduler::handle::{Refused, Unstarted};

/// Chunks of the device memory pool.
pub const CHUNK_BYTES: u64 = 64 << 20;

/// Most replicas one request tries (each stopped or full) before it is refused.
const MAX_TRIES: usize = 8;

/// The replicas: a cheap handle.
#[derive(Debug, Clone)]
pub struct EnginePool {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    state: Mutex<PoolState>,
    load: watch::Sender<Load>,
    pub(super) events: mpsc::Sender<Event>,
}

impl EnginePool {
    /// An empty pool over `devices` and their budgets, and the receiver of its events.
    pub(super) fn new(devices: &[Device], budgets: &[Budget]) -> (Self, mpsc::Receiver<Event>) {
        let memory = MemoryPool::new(budgets, CHUNK_BYTES);
        let (events, receiver) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            state: Mutex::new(PoolState::new(devices, memory)),
            load: watch::Sender::new(Load::default()),
            events,
        });
        (Self { inner }, receiver)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, PoolState> {
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

    /// Queues a request whose client holds its receiver on the replica routing picks,
    /// trying the next one when that one has stopped or its queue is full. The last
    /// refusal when none takes it (the request comes back with it whenever it can).
    pub async fn submit(&self, mut work: Unstarted) -> Result<(), Refused> {
        let mut tried = Vec::new();
        let mut last = SubmitError::NoHealthyDevice;
        while tried.len() < MAX_TRIES {
            let Some((id, engine, _pending)) = self.state().pick(&tried) else {
                break;
            };
            tried.push(id);
            match engine.submit(work).await {
                Ok(()) => return Ok(()),
                Err(Refused {
                    error: error @ (SubmitError::Stopped | SubmitError::QueueFull(_)),
                    work: Some(back),
                }) => (work, last) = (back, error),
                Err(refused) => return Err(refused),
            }
        }
        Err(Refused {
            error: last,
            work: Some(work),
        })
    }

    /// All replicas' latest load together.
    pub fn current_load(&self) -> Load {
        *self.inner.load.borrow()
    }

    /// Follows all replicas' load together.
    pub fn load(&self) -> watch::Receiver<Load> {
        self.inner.load.subscribe()
    }

    pub(super) fn publish_load(&self) {
        let load = self.state().load();
        self.inner
            .load
            .send_if_modified(|l| std::mem::replace(l, load) != load);
    }

    /// Tells load watchers that something changed (health, replicas) even if the load did
    /// not.
    pub(super) fn publish_change(&self) {
        let load = self.state().load();
        self.inner.load.send_replace(load);
    }

    /// Every device's health, memory and readings.
    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.state().statuses()
    }

    /// Batch slots of the replicas that may take requests now.
    pub fn batch_slots(&self) -> usize {
        self.state().batch_slots()
    }

    /// Whether `device` is one of the pool's.
    pub fn has_device(&self, device: usize) -> bool {
        device < self.state().devices.len()
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
