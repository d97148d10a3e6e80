//! `inferpool-agent devices`: what discovery and NVML see on this node, as JSON or as a
//! table for people.

use std::fmt::Write as _;

use serde::Serialize;

use super::telemetry::{NvmlReader, Telemetry};
use super::{Device, Inventory};

/// One device with its readings.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    /// As discovered.
    #[serde(flatten)]
    pub device: Device,
    /// NVML's readings (none on the CPU or without NVML).
    pub telemetry: Option<Telemetry>,
}

/// The node as `devices` prints it.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// Every device.
    pub devices: Vec<DeviceReport>,
    /// Why no GPU is used, when none is.
    pub cpu_fallback_reason: Option<String>,
    /// The driver's version, when NVML answers.
    pub driver_version: Option<String>,
    /// Why NVML readings are missing, when they are.
    pub nvml_unavailable: Option<String>,
}

impl NodeReport {
    /// Reads NVML for every GPU of `inventory`.
    pub fn read(inventory: Inventory) -> Self {
        let nvml = NvmlReader::open();
        let telemetry = |d: &Device| {
            let (nvml, uuid) = (nvml.as_ref().ok()?, d.uuid.as_deref()?);
            nvml.read(uuid).ok()
        };
        let devices = inventory.devices.into_iter().map(|device| DeviceReport {
            telemetry: telemetry(&device),
            device,
        });
        Self {
            devices: devices.collect(),
            cpu_fallback_reason: inventory.cpu_fallback_reason,
            driver_version: nvml.as_ref().ok().and_then(NvmlReader::driver_version),
            nvml_unavailable: nvml.err(),
        }
    }

    /// A table: one line per device, then its readings.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for r in &self.devices {
            let d = &r.device;
            let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
            let _ = writeln!(
                out,
                "{:<7} {}  memory {:.1}/{:.1} GiB free  cc {}  pci {}  {}",
                d.label(),
                d.name,
                gib(d.memory_free_bytes),
                gib(d.memory_total_bytes),
                d.compute_capability.as_deref().unwrap_or("-"),
                d.pci_bus_id.as_deref().unwrap_or("-"),
                d.uuid.as_deref().unwrap_or("-"),
            );
            if let Some(t) = &r.telemetry {
                let _ = writeln!(out, "        {}", readings(t));
            }
        }
        let notes = [
            ("no GPU used", &self.cpu_fallback_reason),
            ("driver", &self.driver_version),
            ("NVML", &self.nvml_unavailable),
        ];
        for (what, note) in notes {
            if let Some(note) = note {
                let _ = writeln!(out, "{what}: {note}");
            }
        }
        out
    }
}

fn readings(t: &Telemetry) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    format!(
        "{} °C  util {} %  {} W  ecc corrected {} uncorrected {}  throttle [{}]",
        show(t.temperature_c.map(|v| v.to_string())),
        show(t.utilization_percent.map(|v| v.to_string())),
        show(t.power_watts.map(|v| format!("{v:.0}"))),
        show(t.ecc_corrected.map(|v| v.to_string())),
        show(t.ecc_uncorrected.map(|v| v.to_string())),
        t.throttle_reasons.join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::HostMemory;

    #[test]
    fn the_table_names_each_device_and_why_there_is_no_gpu() {
        let memory = HostMemory {
            limit: 4 << 30,
            used: 1 << 30,
        };
        let report = NodeReport {
            devices: vec![DeviceReport {
                device: Device::cpu(0, memory),
                telemetry: Some(Telemetry {
                    temperature_c: Some(41),
                    ..Telemetry::default()
                }),
            }],
            cpu_fallback_reason: Some("no CUDA driver (libcuda) on this node".into()),
            driver_version: None,
            nvml_unavailable: Some("NVML unavailable: x".into()),
        };
        let table = report.table();
        assert!(table.starts_with("cpu:0   cpu ("), "{table}");
        assert!(table.contains("memory 3.0/4.0 GiB free"), "{table}");
        assert!(table.contains("41 °C  util - %"), "{table}");
        assert!(table.contains("no GPU used: no CUDA driver"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["devices"][0]["kind"], "cpu");
        assert_eq!(json["devices"][0]["telemetry"]["temperature_c"], 41);
    }
}
