//! NVML readings (nvml-wrapper): temperature, utilisation, power, memory, ECC counts,
//! throttle reasons and XID error events. The library is loaded at run time; a node
//! without it (every CPU node, a container without the driver's utilities) reads as
//! "unavailable", never as an error that stops the agent.

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::event::EventSet;
use serde::{Deserialize, Serialize};

/// One device's readings; a field is `None` where the device or driver does not report it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    /// GPU die temperature, °C.
    pub temperature_c: Option<u32>,
    /// Percent of the last sample period a kernel ran.
    pub utilization_percent: Option<u32>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Device memory in use (all processes), bytes.
    pub memory_used_bytes: Option<u64>,
    /// Device memory, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Corrected ECC errors since the driver loaded.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// Why clocks are held down now (`HW_SLOWDOWN`, `SW_THERMAL_SLOWDOWN`, ...).
    pub throttle_reasons: Vec<String>,
    /// XID error codes seen since the previous reading.
    pub xid_errors: Vec<u64>,
}

/// An open NVML session.
pub struct NvmlReader {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlReader").finish_non_exhaustive()
    }
}

impl NvmlReader {
    /// Loads `libnvidia-ml` and initialises it; the reason when it cannot.
    pub fn open() -> Result<Self, String> {
        Nvml::init()
            .map(|nvml| Self { nvml })
            .map_err(|e| format!("NVML unavailable: {e}"))
    }

    /// The driver's version, e.g. `580.65.06`.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    /// Readings of the device with this UUID (as CUDA reports it: CUDA and NVML number
    /// devices differently unless `CUDA_DEVICE_ORDER=PCI_BUS_ID`).
    pub fn read(&self, uuid: &str) -> Result<Telemetry, String> {
        let d = self
            .nvml
            .device_by_uuid(uuid)
            .map_err(|e| format!("NVML has no device {uuid}: {e}"))?;
        let memory = d.memory_info().ok();
        let ecc = |kind| d.total_ecc_errors(kind, EccCounter::Volatile).ok();
        Ok(Telemetry {
            temperature_c: d.temperature(TemperatureSensor::Gpu).ok(),
            utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
            power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            ecc_corrected: ecc(MemoryError::Corrected),
            ecc_uncorrected: ecc(MemoryError::Uncorrected),
            throttle_reasons: d
                .current_throttle_reasons()
                .map(|r| r.iter_names().map(|(name, _)| name.to_owned()).collect())
                .unwrap_or_default(),
            xid_errors: Vec::new(),
        })
    }

    /// A set that collects critical XID and double-bit ECC events of these devices (by
    /// UUID); devices that cannot register (not supported) are skipped.
    pub fn events(&self, uuids: &[String]) -> Option<XidEvents<'_>> {
        let mut set = self.nvml.create_event_set().ok()?;
        let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
        for uuid in uuids {
            let Ok(device) = self.nvml.device_by_uuid(uuid.as_str()) else {
                continue;
            };
            // Registering what a device does not support would release the whole set.
            let supported = device
                .supported_event_types()
                .unwrap_or(EventTypes::empty());
            let wanted = wanted & supported;
            if wanted.is_empty() {
                continue;
            }
            set = match device.register_events(wanted, set) {
                Ok(set) => set,
                Err(e) => {
                    tracing::warn!(uuid, error = %e.error, "XID events unavailable");
                    self.nvml.create_event_set().ok()?
                }
            };
        }
        Some(XidEvents { set })
    }
}

/// The XID NVIDIA gives a double-bit ECC error.
const DOUBLE_BIT_ECC_XID: u64 = 48;

/// XID events as they arrive.
pub struct XidEvents<'nvml> {
    set: EventSet<'nvml>,
}

impl std::fmt::Debug for XidEvents<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XidEvents").finish_non_exhaustive()
    }
}

impl XidEvents<'_> {
    /// Waits up to `timeout_ms` for an event; the device's UUID and the XID code (a
    /// double-bit ECC event, which NVML reports without one, as XID 48: the same fault).
    pub fn next(&self, timeout_ms: u32) -> Option<(String, u64)> {
        let event = self.set.wait(timeout_ms).ok()?;
        let uuid = event.device.uuid().ok()?;
        let code = match event.event_data {
            Some(XidError::Value(code)) => code,
            _ if event.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) => DOUBLE_BIT_ECC_XID,
            Some(XidError::Unknown) | None => 0,
        };
        Some((uuid, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a node without the NVIDIA driver (this one, every CPU node), NVML is reported
    /// unavailable with a reason instead of failing the agent.
    #[test]
    fn a_node_without_nvml_reads_as_unavailable() {
        match NvmlReader::open() {
            Err(reason) => assert!(reason.starts_with("NVML unavailable"), "{reason}"),
            Ok(nvml) => assert!(nvml.driver_version().is_some()),
        }
    }
}
