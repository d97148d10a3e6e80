//! GPU discovery through the CUDA driver API (cudarc), with a clean CPU fallback.
//!
//! The CPU build loads libcuda at run time when it is present; cudarc panics on first use
//! when it is not, so `is_culib_present()` is checked before any CUDA call.

use serde::Serialize;

/// What kind of device runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
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
    /// CUDA ordinal (for the CPU: the index of the CPU engine).
    pub ordinal: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in bytes (for the CPU: the cgroup limit, or the machine's memory).
    pub memory_total_bytes: u64,
    /// Free memory in bytes when discovered (for the CPU: limit less what is in use).
    pub memory_free_bytes: u64,
    /// Compute capability, e.g. `9.0` (none for the CPU).
    pub compute_capability: Option<String>,
    /// PCI bus id, e.g. `0000:3b:00.0` (none for the CPU).
    pub pci_bus_id: Option<String>,
    /// The driver's UUID, e.g. `GPU-5fa0…` (none for the CPU).
    pub uuid: Option<String>,
}

impl Device {
    /// The label that names this device in metrics and reports: `cuda:0`, `cpu:1`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        };
        format!("{kind}:{}", self.ordinal)
    }

    /// The `index`th CPU device, with the host's memory.
    pub fn cpu(index: u32, memory: HostMemory) -> Self {
        Self {
            kind: DeviceKind::Cpu,
            ordinal: index,
            name: format!("cpu ({} threads)", cpu_threads()),
            memory_total_bytes: memory.limit,
            memory_free_bytes: memory.limit.saturating_sub(memory.used),
            compute_capability: None,
            pci_bus_id: None,
            uuid: None,
        }
    }
}

/// The host's memory as the pod sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// The most the process may use (cgroup limit, else the machine's memory).
    pub limit: u64,
    /// In use now.
    pub used: u64,
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
    /// `count` CPU devices (at least one) sharing the host's memory, with the reason no GPU
    /// is used.
    pub fn cpu(reason: String, count: u32, memory: HostMemory) -> Self {
        let count = count.max(1);
        let share = HostMemory {
            limit: memory.limit / u64::from(count),
            used: memory.used / u64::from(count),
        };
        Self {
            devices: (0..count).map(|i| Device::cpu(i, share)).collect(),
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

/// Finds the node's NVIDIA GPUs, or falls back to `cpu_devices` CPU devices with the
/// reason.
pub fn discover(cpu_devices: u32, host: HostMemory) -> Inventory {
    match cuda::devices() {
        Ok(devices) if !devices.is_empty() => Inventory {
            devices,
            cpu_fallback_reason: None,
        },
        Ok(_) => Inventory::cpu(
            "the CUDA driver reports no device".to_owned(),
            cpu_devices,
            host,
        ),
        Err(reason) => Inventory::cpu(reason, cpu_devices, host),
    }
}

mod cuda {
    use cudarc::driver::sys::CUdevice_attribute as Attr;
    use cudarc::driver::{CudaContext, result};

    use super::{Device, DeviceKind};

    pub(super) fn devices() -> Result<Vec<Device>, String> {
        if !driver_present() {
            return Err("no CUDA driver (libcuda) on this node".to_owned());
        }
        result::init().map_err(|e| format!("cuInit failed: {e}"))?;
        let count = result::device::get_count().map_err(|e| format!("no device count: {e}"))?;
        // A GPU that cannot be queried is left out; the others still serve.
        let usable = (0..count).filter_map(|ordinal| match device(ordinal) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "GPU left out");
                None
            }
        });
        Ok(usable.collect())
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
        let fail = |what: &str, e: result::DriverError| format!("device {ordinal} {what}: {e}");
        let index = usize::try_from(ordinal).unwrap_or_default();
        // The primary context (the one candle will use) is needed for free memory.
        let ctx = CudaContext::new(index).map_err(|e| fail("context", e))?;
        let (free, total) = ctx.mem_get_info().map_err(|e| fail("memory", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| fail("capability", e))?;
        Ok(Device {
            kind: DeviceKind::Cuda,
            ordinal: u32::try_from(ordinal).unwrap_or_default(),
            name: ctx.name().map_err(|e| fail("name", e))?,
            memory_total_bytes: total as u64,
            memory_free_bytes: free as u64,
            compute_capability: Some(format!("{major}.{minor}")),
            pci_bus_id: pci_bus_id(&ctx).ok(),
            uuid: ctx.uuid().ok().map(|u| uuid_text(&u.bytes)),
        })
    }

    fn pci_bus_id(ctx: &CudaContext) -> Result<String, result::DriverError> {
        let domain = ctx.attribute(Attr::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?;
        let bus = ctx.attribute(Attr::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?;
        let dev = ctx.attribute(Attr::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?;
        Ok(super::pci_text(domain, bus, dev))
    }

    fn uuid_text(bytes: &[std::ffi::c_char; 16]) -> String {
        super::uuid_text(bytes.map(|b| b as u8))
    }
}

/// `domain:bus:device.0` as NVML and `nvidia-smi` print it.
fn pci_text(domain: i32, bus: i32, device: i32) -> String {
    format!("{domain:08x}:{bus:02x}:{device:02x}.0")
}

/// The `GPU-8-4-4-4-12` form `nvidia-smi -L` prints.
fn uuid_text(bytes: [u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostMemory = HostMemory {
        limit: 8 << 30,
        used: 2 << 30,
    };

    #[test]
    fn the_cpu_fallback_names_its_reason_and_splits_the_host_memory() {
        let inv = Inventory::cpu("no CUDA driver".into(), 2, HOST);
        assert!(!inv.has_gpu());
        assert_eq!(inv.devices.len(), 2);
        assert_eq!(inv.devices[1].label(), "cpu:1");
        assert_eq!(inv.devices[0].memory_total_bytes, 4 << 30);
        assert_eq!(inv.devices[0].memory_free_bytes, 3 << 30);
        assert_eq!(inv.cpu_fallback_reason.as_deref(), Some("no CUDA driver"));
        assert_eq!(Inventory::cpu("x".into(), 0, HOST).devices.len(), 1);
    }

    #[test]
    fn identifiers_print_as_the_driver_tools_do() {
        assert_eq!(pci_text(0, 0x3b, 0), "00000000:3b:00.0");
        let uuid = uuid_text(*b"\x5f\xa0\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e");
        assert_eq!(uuid, "GPU-5fa00102-0304-0506-0708-090a0b0c0d0e");
    }

    /// On any machine, discovery answers without panicking; without a GPU it falls back.
    #[test]
    fn discovery_never_panics_and_is_consistent() {
        let inv = discover(1, HOST);
        assert!(!inv.devices.is_empty());
        assert_eq!(inv.has_gpu(), inv.cpu_fallback_reason.is_none());
    }
}
