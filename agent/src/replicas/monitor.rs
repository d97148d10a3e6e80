//! Reads every GPU's NVML telemetry on a thread of its own (NVML calls block) and passes
//! the readings, with the XID events seen between them, to the supervisor. Nothing runs on
//! a node without GPUs or without NVML.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::events::Event;
use super::pool::EnginePool;
use crate::gpu::telemetry::NvmlReader;
use crate::gpu::{DeviceKind, Inventory};

/// Starts the reader thread when there is a GPU with a UUID to read.
pub(super) fn spawn(pool: &EnginePool, inventory: &Inventory, every: Duration) {
    let gpus: Vec<(usize, String)> = (inventory.devices.iter().enumerate())
        .filter(|(_, d)| d.kind == DeviceKind::Cuda)
        .filter_map(|(i, d)| d.uuid.clone().map(|u| (i, u)))
        .collect();
    if gpus.is_empty() {
        return;
    }
    let events = pool.inner.events.clone();
    std::thread::spawn(move || match NvmlReader::open() {
        Ok(nvml) => read_forever(&nvml, &gpus, every, &events),
        Err(reason) => tracing::warn!(reason, "GPU health readings unavailable"),
    });
}

fn read_forever(
    nvml: &NvmlReader,
    gpus: &[(usize, String)],
    every: Duration,
    events: &mpsc::Sender<Event>,
) {
    let uuids: Vec<String> = gpus.iter().map(|(_, u)| u.clone()).collect();
    let xids = nvml.events(&uuids);
    loop {
        let mut seen: Vec<(String, u64)> = Vec::new();
        let until = Instant::now() + every;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let wait = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            // A timeout ends the wait with the interval; an error (or no event set) waits
            // out the rest of it rather than spin.
            match xids.as_ref().and_then(|x| x.next(wait)) {
                Some(event) => seen.push(event),
                None => std::thread::sleep(until.saturating_duration_since(Instant::now())),
            }
        }
        for (device, uuid) in gpus {
            // A GPU that no longer answers (off the bus) still gets its XIDs judged.
            let mut telemetry = nvml.read(uuid).unwrap_or_default();
            telemetry.xid_errors = seen
                .iter()
                .filter(|(u, _)| u == uuid)
                .map(|(_, x)| *x)
                .collect();
            if events
                .blocking_send(Event::Reading {
                    device: *device,
                    telemetry,
                })
                .is_err()
            {
                return;
            }
        }
    }
}
