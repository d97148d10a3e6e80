//! Per-device metrics, refreshed before each scrape from the pool's view: health state,
//! the memory pool (budget, weights, KV, free, fragmentation), replicas, and for GPUs the
//! NVML readings (`inferpool_agent_gpu_*`). Labels are fixed sets: the device's label
//! (`cuda:0`, `cpu:1`), a state, a holder or an ECC kind.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::gpu::health::HealthState;
use crate::replicas::DeviceStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    device: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    device: String,
    kind: &'static str,
}

type Level = Gauge<f64, AtomicU64>;

/// The NVML gauges (under `inferpool_agent_`): a family is exposed once it has a series,
/// i.e. once a GPU has been read, so on a CPU node none of them shows.
pub const GPU_GAUGES: [&str; 6] = [
    "gpu_utilization_percent",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpu_temperature_celsius",
    "gpu_power_watts",
    "gpu_ecc_errors",
];

/// The device gauges.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    health: Family<StateLabels, Gauge>,
    moved: Family<DeviceLabels, Counter>,
    failures: Family<DeviceLabels, Gauge>,
    replicas: Family<DeviceLabels, Gauge>,
    budget: Family<DeviceLabels, Gauge>,
    used: Family<KindLabels, Gauge>,
    free: Family<DeviceLabels, Gauge>,
    fragmentation: Family<DeviceLabels, Level>,
    gpu_utilization: Family<DeviceLabels, Gauge>,
    gpu_memory_used: Family<DeviceLabels, Gauge>,
    gpu_memory_total: Family<DeviceLabels, Gauge>,
    gpu_temperature: Family<DeviceLabels, Gauge>,
    gpu_power: Family<DeviceLabels, Level>,
    gpu_ecc: Family<KindLabels, Gauge>,
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl DeviceMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "device_health",
            "1 for the device's health state (healthy, degraded, failed, recovering)",
            self.health.clone(),
        );
        r.register(
            "device_requests_moved",
            "Requests a failed engine on the device handed back, run on another device",
            self.moved.clone(),
        );
        r.register(
            "device_failures",
            "Failures of the device in a row (its retry backoff doubles with each)",
            self.failures.clone(),
        );
        r.register(
            "device_replicas",
            "Replicas of the model running on the device",
            self.replicas.clone(),
        );
        r.register(
            "device_memory_budget_bytes",
            "The memory pool's share of the device: total less reserve less other processes",
            self.budget.clone(),
        );
        r.register(
            "device_memory_used_bytes",
            "Pool memory held, by holder (weights, kv)",
            self.used.clone(),
        );
        r.register(
            "device_memory_free_bytes",
            "Pool memory not held",
            self.free.clone(),
        );
        r.register(
            "device_memory_fragmentation",
            "1 - largest free run / free pool memory",
            self.fragmentation.clone(),
        );
        self.register_gpu(r);
    }

    fn register_gpu(&self, r: &mut Registry) {
        r.register(
            GPU_GAUGES[0],
            "NVML: percent of time a kernel ran",
            self.gpu_utilization.clone(),
        );
        r.register(
            GPU_GAUGES[1],
            "NVML: device memory in use by all processes",
            self.gpu_memory_used.clone(),
        );
        r.register(
            GPU_GAUGES[2],
            "NVML: device memory",
            self.gpu_memory_total.clone(),
        );
        r.register(
            GPU_GAUGES[3],
            "NVML: GPU die temperature",
            self.gpu_temperature.clone(),
        );
        r.register(GPU_GAUGES[4], "NVML: power draw", self.gpu_power.clone());
        r.register(
            GPU_GAUGES[5],
            "NVML: ECC errors since the driver loaded, by kind (corrected, uncorrected)",
            self.gpu_ecc.clone(),
        );
    }

    /// Sets every gauge from the pool's view.
    pub fn observe(&self, statuses: &[DeviceStatus]) {
        for s in statuses {
            let device = s.device.label();
            for state in HealthState::ALL {
                let labels = StateLabels {
                    device: device.clone(),
                    state: state.as_str(),
                };
                self.health
                    .get_or_create(&labels)
                    .set(i64::from(s.health == state));
            }
            let d = DeviceLabels {
                device: device.clone(),
            };
            self.failures.get_or_create(&d).set(i64::from(s.failures));
            // Mirrors the pool's own total.
            let moved = self.moved.get_or_create(&d);
            moved.inc_by(s.moved.saturating_sub(moved.get()));
            self.replicas.get_or_create(&d).set(int(s.replicas));
            self.observe_memory(&device, s);
            if let Some(t) = &s.telemetry {
                let set = |f: &Family<DeviceLabels, Gauge>, v: Option<u64>| {
                    if let Some(v) = v {
                        f.get_or_create(&d).set(int(v));
                    }
                };
                set(&self.gpu_utilization, t.utilization_percent.map(u64::from));
                set(&self.gpu_memory_used, t.memory_used_bytes);
                set(&self.gpu_memory_total, t.memory_total_bytes);
                set(&self.gpu_temperature, t.temperature_c.map(u64::from));
                if let Some(w) = t.power_watts {
                    self.gpu_power.get_or_create(&d).set(w);
                }
                for (kind, v) in [
                    ("corrected", t.ecc_corrected),
                    ("uncorrected", t.ecc_uncorrected),
                ] {
                    if let Some(v) = v {
                        let labels = KindLabels {
                            device: device.clone(),
                            kind,
                        };
                        self.gpu_ecc.get_or_create(&labels).set(int(v));
                    }
                }
            }
        }
    }

    fn observe_memory(&self, device: &str, s: &DeviceStatus) {
        let d = DeviceLabels {
            device: device.to_owned(),
        };
        self.budget.get_or_create(&d).set(int(s.memory.budget));
        self.free.get_or_create(&d).set(int(s.memory.free));
        self.fragmentation
            .get_or_create(&d)
            .set(s.memory.fragmentation);
        for (kind, bytes) in [("weights", s.memory.weights), ("kv", s.memory.kv)] {
            let labels = KindLabels {
                device: device.to_owned(),
                kind,
            };
            self.used.get_or_create(&labels).set(int(bytes));
        }
    }
}
