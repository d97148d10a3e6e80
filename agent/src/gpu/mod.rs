//! The node's compute devices: NVIDIA GPUs found through the CUDA driver (or the CPU),
//! their NVML readings, each device's health, and the memory pool replicas are placed in.

mod discovery;
pub mod health;
pub mod memory;
pub mod report;
pub mod telemetry;

pub use discovery::{Device, DeviceKind, HostMemory, Inventory, discover};
