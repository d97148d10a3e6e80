//! Data-parallel replicas of the model inside one agent: one engine (with its own batcher)
//! per device, requests spread over them by load and device health. A supervisor reacts
//! to faults: a failed device's unstarted requests move to a healthy one, its running ones
//! end with an error, a replacement replica is placed where there is room, and the device
//! is retried after its backoff.

mod events;
mod launch;
mod monitor;
mod pool;
pub mod route;
mod state;
mod supervisor;

pub use self::launch::{LaunchSettings, Launcher, candle_device};
pub use self::pool::{CHUNK_BYTES, EnginePool};
pub use self::state::DeviceStatus;
pub use self::supervisor::{PoolSettings, start};
