//! The agent's view of its devices: their statuses for reports and metrics, the batch
//! slots that can serve, readiness and liveness as the devices allow.

use super::{Agent, Phase};
use crate::replicas::{DeviceStatus, EnginePool};

impl Agent {
    /// Every device's health, memory and readings: the pool's view once it runs, the
    /// devices as discovered before.
    pub fn device_statuses(&self) -> Vec<DeviceStatus> {
        match self.served.get() {
            Some(s) => s.engine.devices(),
            None => self
                .inventory
                .devices
                .iter()
                .map(DeviceStatus::discovered)
                .collect(),
        }
    }

    /// Batch slots of the replicas that can serve now (the configured batch while the
    /// model loads).
    pub fn batch_slots(&self) -> usize {
        self.served
            .get()
            .map_or(self.max_batch_size, |s| s.engine.batch_slots())
    }

    /// The replicas, once the model is loaded.
    pub fn engines(&self) -> Option<&EnginePool> {
        self.served.get().map(|s| &s.engine)
    }

    /// Whether only a new process can help: the model loaded, no device can serve, and
    /// every device has failed `restart_after` times in a row.
    pub fn needs_restart(&self) -> bool {
        let Some(served) = self.served.get() else {
            return false;
        };
        let devices = served.engine.devices();
        !served.engine.schedulable() && devices.iter().all(|d| d.failures >= self.restart_after)
    }

    /// Whether requests can run: ready, and a replica on a schedulable device.
    pub fn serving(&self) -> bool {
        self.phase() == Phase::Ready && self.served.get().is_some_and(|s| s.engine.schedulable())
    }
}
