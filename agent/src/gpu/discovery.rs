//! GPU discovery through the CUDA driver API (cudarc), with a clean CPU fallback.
//!
//! The CPU build loads libcuda at run time when it is present; cudarc panics on first use
//! when it is not, so `is_culib_present()` is checked before any CUDA call.

use serde::Serialize;

/// What kind of device runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

/// One device as discovered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// CPU or CUDA.
    pub kind: DeviceKind,
    /// CUDA ordinal (0 for the CPU).
    pub ordinal: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in bytes (0 for the CPU: it is bounded by the pod's limit instead).
    pub memory_total_bytes: u64,
}

/// The devices of this node, and why the GPU path was not taken when it was not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// GPUs, or the CPU alone when none was found.
    pub devices: Vec<Device>,
    /// Set when no GPU is used: no driver, no device, or a driver error.
    pub cpu_fallback_reason: Option<String>,
}

impl Inventory {
    fn cpu(reason: String) -> Self {
        let name = format!("cpu ({} threads)", cpu_threads());
        let cpu = Device {
            kind: DeviceKind::Cpu,
            ordinal: 0,
            name,
            memory_total_bytes: 0,
        };
        Self {
            devices: vec![cpu],
            cpu_fallback_reason: Some(reason),
        }
    }

    /// Whether any GPU was found.
    pub fn has_gpu(&self) -> bool {
        self.devices.iter().any(|d| d.kind == DeviceKind::Cuda)
    }
}

fn cpu_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

/// Finds the node's NVIDIA GPUs, or falls back to the CPU with the reason.
pub fn discover() -> Inventory {
    match cuda::devices() {
        Ok(devices) if !devices.is_empty() => Inventory {
            devices,
            cpu_fallback_reason: None,
        },
        Ok(_) => Inventory::cpu("the CUDA driver reports no device".to_owned()),
        Err(reason) => Inventory::cpu(reason),
    }
}

mod cuda {
    use cudarc::driver::result;

    use super::{Device, DeviceKind};

    pub(super) fn devices() -> Result<Vec<Device>, String> {
        if !driver_present() {
            return Err("no CUDA driver (libcuda) on this node".to_owned());
        }
        result::init().map_err(|e| format!("cuInit failed: {e}"))?;
        let count = result::device::get_count().map_err(|e| format!("no device count: {e}"))?;
        (0..count).map(device).collect()
    }

    #[cfg(not(feature = "cuda"))]
    fn driver_present() -> bool {
        // SAFETY: only probes for the shared library; no CUDA function is called.
        #[allow(unsafe_code)]
        unsafe {
            cudarc::driver::sys::is_culib_present()
        }
    }

    // The CUDA build links libcuda directly: the driver is there or the binary did not start.
    #[cfg(feature = "cuda")]
    fn driver_present() -> bool {
        true
    }

    fn device(ordinal: i32) -> Result<Device, String> {
        let dev = result::device::get(ordinal).map_err(|e| format!("device {ordinal}: {e}"))?;
        let name = result::device::get_name(dev).map_err(|e| format!("device {ordinal}: {e}"))?;
        // SAFETY: `dev` was just returned by cuDeviceGet for a valid ordinal.
        #[allow(unsafe_code)]
        let total = unsafe { result::device::total_mem(dev) }
            .map_err(|e| format!("device {ordinal} memory: {e}"))?;
        Ok(Device {
            kind: DeviceKind::Cuda,
            ordinal: u32::try_from(ordinal).unwrap_or_default(),
            name,
            memory_total_bytes: total as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_fallback_names_its_reason_and_one_cpu_device() {
        let inv = Inventory::cpu("no CUDA driver".into());
        assert!(!inv.has_gpu());
        assert_eq!(inv.devices.len(), 1);
        assert_eq!(inv.devices[0].kind, DeviceKind::Cpu);
        assert_eq!(inv.cpu_fallback_reason.as_deref(), Some("no CUDA driver"));
    }

    /// On any machine, discovery answers without panicking; without a GPU it falls back.
    #[test]
    fn discovery_never_panics_and_is_consistent() {
        let inv = discover();
        assert!(!inv.devices.is_empty());
        assert_eq!(inv.has_gpu(), inv.cpu_fallback_reason.is_none());
    }
}
