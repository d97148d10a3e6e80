//! `devices` in `agent.json`: how the agent uses its node's devices. Every field has a
//! default; a pool's ConfigMap sets none of them today, local pools and tests do.

use serde::Deserialize;

use crate::gpu::health::HealthThresholds;

/// How devices are split, watched and retried.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceConfig {
    /// On a node without a GPU: how many CPU devices (engines, each with its own batcher
    /// and an equal share of the pod's memory) to run.
    pub cpu_devices: u32,
    /// Share of each device's memory kept out of the pool (activations, the CUDA context,
    /// the allocator's slack), 0..1.
    pub reserve_fraction: f64,
    /// Seconds between NVML readings.
    pub poll_seconds: f64,
    /// When readings degrade or fail a device, and how long a failed one waits.
    pub health: HealthThresholds,
    /// Failures in a row of every device (none serving) after which `/healthz` fails, so
    /// that the kubelet restarts the pod: a sticky CUDA error outlives in-process retries.
    pub restart_after_failures: u32,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            cpu_devices: 1,
            reserve_fraction: 0.1,
            poll_seconds: 5.0,
            health: HealthThresholds::default(),
            restart_after_failures: 4,
        }
    }
}

impl DeviceConfig {
    /// The NVML reading interval.
    pub fn poll(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.poll_seconds.clamp(0.1, 3600.0))
    }
}
