//! Following one agent's `WatchLoad` stream for as long as the pool keeps the agent:
//! every report goes to a `LoadSink`, a broken stream is reconnected with backoff, and
//! the sink hears when the agent is lost meanwhile.

use std::sync::Weak;
use std::time::Duration;

use inferpool_protocol::agent::{Device, DeviceHealth, LoadReport, WatchLoadRequest};
use tonic::transport::Channel;

use super::details::client;
use crate::gateway::core::pick::{DeviceCounts, Reported};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Where an agent's reports go.
pub trait LoadSink: Send + Sync + 'static {
    /// The first report of a new stream: a new process, or the same one reachable again.
    fn rejoined(&self, id: &str);
    /// A report: its load, and whether it takes no new requests.
    fn report(&self, id: &str, reported: Reported, draining: bool, embedding_model: &str);
    /// Its stream ended; `broken` when the connection failed (a dead or frozen agent)
    /// rather than the agent ending it.
    fn lost(&self, id: &str, broken: bool);
}

/// Follows agent `id`'s reports on `channel` until the sink is gone.
pub async fn follow_load<S: LoadSink>(sink: Weak<S>, id: String, channel: Channel) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let broken = match one_stream(&sink, &id, &channel).await {
            Some((broken, reported)) => {
                if reported {
                    backoff = BACKOFF_MIN;
                }
                broken
            }
            None => return,
        };
        match sink.upgrade() {
            Some(s) => s.lost(&id, broken),
            None => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription: whether it ended broken, and whether anything was reported; `None`
/// once the sink is gone.
async fn one_stream<S: LoadSink>(
    sink: &Weak<S>,
    id: &str,
    channel: &Channel,
) -> Option<(bool, bool)> {
    let mut reports = match client(channel.clone())
        .watch_load(WatchLoadRequest {})
        .await
    {
        Ok(response) => response.into_inner(),
        Err(_) => return Some((true, false)),
    };
    let mut first = true;
    loop {
        let report = match reports.message().await {
            Ok(Some(report)) => report,
            Ok(None) => return Some((false, !first)),
            Err(_) => return Some((true, !first)),
        };
        let sink = sink.upgrade()?;
        if std::mem::take(&mut first) {
            sink.rejoined(id);
        }
        let (reported, draining) = reported(&report);
        sink.report(id, reported, draining, &report.embedding_model);
    }
}

/// A report as the pickers see it, and whether the agent takes no new requests.
pub fn reported(r: &LoadReport) -> (Reported, bool) {
    let queued = r
        .queued
        .as_ref()
        .map_or(0, |q| q.critical + q.high + q.normal + q.low);
    let kv_usage = f64::from(r.kv_blocks_used) / f64::from(r.kv_blocks_total.max(1));
    let reported = Reported {
        queued,
        running: r.running,
        max_batch_size: r.max_batch_size,
        kv_usage,
        devices: device_counts(&r.devices),
    };
    // An agent still loading its model reports no KV blocks yet, and one whose devices
    // all failed has none to run on: neither takes traffic.
    let accepting = !r.draining && r.kv_blocks_total > 0 && reported.devices.schedulable();
    (reported, !accepting)
}

fn device_counts(devices: &[Device]) -> DeviceCounts {
    let mut counts = DeviceCounts::default();
    // A device serves only with a replica on it; a failed one counts either way.
    for d in devices {
        let idle = d.replicas == 0;
        let health = match d.health() {
            DeviceHealth::Unspecified if d.healthy => DeviceHealth::Healthy,
            DeviceHealth::Unspecified => DeviceHealth::Failed,
            known => known,
        };
        let slot = match health {
            DeviceHealth::Healthy | DeviceHealth::Degraded if idle => continue,
            DeviceHealth::Healthy => &mut counts.healthy,
            DeviceHealth::Degraded => &mut counts.degraded,
            DeviceHealth::Failed => &mut counts.failed,
            DeviceHealth::Recovering | DeviceHealth::Unspecified => &mut counts.recovering,
        };
        *slot += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(health: DeviceHealth, replicas: u32) -> Device {
        Device {
            health: health.into(),
            replicas,
            ..Device::default()
        }
    }

    fn report(devices: Vec<Device>) -> LoadReport {
        LoadReport {
            kv_blocks_total: 10,
            devices,
            ..LoadReport::default()
        }
    }

    #[test]
    fn device_health_counts_only_devices_that_serve_or_failed() {
        let (r, refusing) = reported(&report(vec![
            device(DeviceHealth::Healthy, 1),
            device(DeviceHealth::Degraded, 1),
            device(DeviceHealth::Healthy, 0),
            device(DeviceHealth::Failed, 0),
        ]));
        assert!(!refusing);
        let expected = DeviceCounts {
            healthy: 1,
            degraded: 1,
            failed: 1,
            recovering: 0,
        };
        assert_eq!(r.devices, expected);
    }

    #[test]
    fn an_agent_whose_serving_devices_all_failed_takes_no_traffic() {
        let failed = report(vec![
            device(DeviceHealth::Failed, 0),
            device(DeviceHealth::Recovering, 0),
            device(DeviceHealth::Healthy, 0),
        ]);
        assert!(reported(&failed).1);
        // An agent that reports no devices (an older one) is taken at its word.
        assert!(!reported(&report(vec![])).1);
    }
}
