//! What the supervisor hears, from engines, the NVML reader, launches and (in tests)
//! fault injection.

use crate::gpu::memory::Placement;
use crate::gpu::telemetry::Telemetry;
use crate::scheduler::handle::EngineExit;

use super::launch::Started;

/// What the supervisor hears.
#[derive(Debug)]
pub(super) enum Event {
    /// A replica's engine stopped: on a fault or evacuation (with what it hands back), or
    /// (`None`) because it was retired and finished its work.
    Exited {
        replica: u32,
        exit: Option<EngineExit>,
    },
    /// An NVML reading of a device.
    Reading { device: usize, telemetry: Telemetry },
    /// A launch ended.
    Launched {
        plan: Plan,
        result: Result<Started, String>,
    },
}

/// A replica being started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub id: u32,
    pub home: usize,
    pub placement: Placement,
    pub purpose: Purpose,
}

/// Why a replica is started: what decides, once it is ready, whether it is still wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// One of the pool's first replicas.
    Initial,
    /// In place of its home device's own replica, while that device is down.
    StandIn,
    /// A failed device's own replica, loaded anew to see whether the device works again.
    Recovery,
}
