//! The node's compute devices: NVIDIA GPUs found through the CUDA driver, or the CPU.

mod discovery;

pub use discovery::{Device, DeviceKind, Inventory, discover};
