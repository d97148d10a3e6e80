//! What the pool holds under its lock: each device's health, readings and fault switch,
//! the running replicas, and the memory pool they are placed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::route::{Candidate, pick};
use crate::engine::kv::BLOCK_SIZE;
use crate::gpu::Device;
use crate::gpu::health::{DeviceHealth, HealthState};
use crate::gpu::memory::{DeviceMemory, MemoryPool};
use crate::gpu::telemetry::Telemetry;
use crate::scheduler::batcher::Load;
use crate::scheduler::faults::StepFaults;
use crate::scheduler::handle::EngineHandle;

/// One device and what is known about it.
#[derive(Debug)]
pub(super) struct DeviceSlot {
    pub device: Device,
    pub health: DeviceHealth,
    pub telemetry: Option<Telemetry>,
    /// Uncorrected ECC errors at the first reading.
    pub baseline_ecc: Option<u64>,
    /// Shared with the engine that runs here, for fault injection.
    pub faults: StepFaults,
    /// Requests its failed engines handed back to be run elsewhere, since start.
    pub moved: u64,
}

/// One running engine.
#[derive(Debug)]
pub(super) struct Replica {
    pub id: u32,
    /// Where it runs.
    pub device: usize,
    /// The device it stands in for (its own, unless it replaces a failed one's).
    pub home: usize,
    pub engine: EngineHandle,
    /// Submissions routed here and not yet answered: the engine's published load does not
    /// count them yet, and a burst routed on that load alone would all land here.
    pub pending: Arc<AtomicUsize>,
}

/// One routed submission, counted in its replica's `pending` until dropped.
#[derive(Debug)]
pub(super) struct Pending(Arc<AtomicUsize>);

impl Pending {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub(super) struct PoolState {
    pub devices: Vec<DeviceSlot>,
    pub replicas: Vec<Replica>,
    pub memory: MemoryPool,
    /// Counters of replicas that are gone, so that pool totals never go down.
    pub retired: Load,
    pub next_id: u32,
    /// Devices that have a replica of their own (the initial layout).
    pub homes: Vec<usize>,
    /// Retired stand-ins still finishing their work: id and device (a fault there is
    /// still the device's).
    pub retiring: HashMap<u32, usize>,
}

/// One device as reports and metrics show it.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatus {
    /// The device as discovered.
    pub device: Device,
    /// Its health.
    pub health: HealthState,
    /// Why it is not healthy.
    pub reason: Option<String>,
    /// Its share of the memory pool.
    pub memory: DeviceMemory,
    /// The latest NVML reading (none on the CPU or without NVML).
    pub telemetry: Option<Telemetry>,
    /// Replicas running on it.
    pub replicas: usize,
    /// Failures in a row.
    pub failures: u32,
    /// Requests moved off it to another device (they had streamed nothing), since start.
    pub moved: u64,
}

impl DeviceStatus {
    /// A device as discovered, before any replica runs.
    pub fn discovered(device: &Device) -> Self {
        Self {
            device: device.clone(),
            health: HealthState::Healthy,
            reason: None,
            memory: DeviceMemory::default(),
            telemetry: None,
            replicas: 0,
            failures: 0,
            moved: 0,
        }
    }
}

impl PoolState {
    pub fn new(devices: &[Device], memory: MemoryPool) -> Self {
        let devices = devices
            .iter()
            .map(|d| DeviceSlot {
                device: d.clone(),
                health: DeviceHealth::default(),
                telemetry: None,
                baseline_ecc: None,
                faults: StepFaults::default(),
                moved: 0,
            })
            .collect();
        Self {
            devices,
            replicas: Vec::new(),
            memory,
            retired: Load::default(),
            next_id: 1,
            homes: Vec::new(),
            retiring: HashMap::new(),
        }
    }

    pub fn health(&self, device: usize) -> HealthState {
        self.devices
            .get(device)
            .map_or(HealthState::Failed, |d| d.health.state())
    }

    /// The replica routing picks among live ones on schedulable devices, leaving out the
    /// ids in `tried`: its id, engine, and the count of the submission until it is answered.
    pub fn pick(&self, tried: &[u32]) -> Option<(u32, EngineHandle, Pending)> {
        let live: Vec<&Replica> = self
            .replicas
            .iter()
            .filter(|r| !r.engine.stopped() && !tried.contains(&r.id))
            .collect();
        let candidates: Vec<Candidate> = live
            .iter()
            .map(|r| Candidate {
                health: self.health(r.device),
                load: r.engine.current_load(),
                pending: r.pending.load(Ordering::SeqCst),
            })
            .collect();
        let r = live[pick(&candidates)?];
        Some((r.id, r.engine.clone(), Pending::new(&r.pending)))
    }

    pub fn load(&self) -> Load {
        let live = self.replicas.iter().map(|r| r.engine.current_load());
        let mut load = Load::sum(live);
        load.preemptions += self.retired.preemptions;
        load.prefix.queried_tokens += self.retired.prefix.queried_tokens;
        load.prefix.hit_tokens += self.retired.prefix.hit_tokens;
        load
    }

    /// Takes replica `id` out; its counters join the retired ones.
    pub fn remove(&mut self, id: u32) -> Option<Replica> {
        let i = self.replicas.iter().position(|r| r.id == id)?;
        let replica = self.replicas.remove(i);
        let last = replica.engine.current_load();
        self.retired.preemptions += last.preemptions;
        self.retired.prefix.queried_tokens += last.prefix.queried_tokens;
        self.retired.prefix.hit_tokens += last.prefix.hit_tokens;
        Some(replica)
    }

    /// Counts requests handed back by a stopped engine on `device`.
    pub fn count_moved(&mut self, device: Option<usize>, n: usize) {
        if let Some(slot) = device.and_then(|d| self.devices.get_mut(d)) {
            slot.moved += n as u64;
        }
    }

    /// Batch slots of the replicas that may take requests.
    pub fn batch_slots(&self) -> usize {
        let serving = self
            .replicas
            .iter()
            .filter(|r| !r.engine.stopped() && self.health(r.device).schedulable());
        serving.map(|r| r.engine.current_load().batch_limit).sum()
    }

    pub fn schedulable(&self) -> bool {
        self.replicas
            .iter()
            .any(|r| !r.engine.stopped() && self.health(r.device).schedulable())
    }

    pub fn capacity_tokens(&self) -> usize {
        self.replicas
            .iter()
            .map(|r| r.engine.current_load().kv_blocks_total * BLOCK_SIZE)
            .min()
            .unwrap_or(0)
    }

    #[cfg(feature = "fault-injection")]
    pub fn faults(&self, device: usize) -> Option<&StepFaults> {
        self.devices.get(device).map(|d| &d.faults)
    }

    pub fn statuses(&self) -> Vec<DeviceStatus> {
        let on = |i| self.replicas.iter().filter(|r| r.device == i).count();
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceStatus {
                device: d.device.clone(),
                health: d.health.state(),
                reason: d.health.reason().map(str::to_owned),
                memory: self.memory.memory(i),
                telemetry: d.telemetry.clone(),
                replicas: on(i),
                failures: d.health.failures(),
                moved: d.moved,
            })
            .collect()
    }
}
