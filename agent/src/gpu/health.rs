//! Each device's health as a state machine: healthy, degraded, failed, recovering. Fed by
//! NVML readings against thresholds and by engine faults; a failed device is retried after
//! a backoff that doubles with each failure in a row. Plain values and explicit clocks: no
//! I/O here.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::telemetry::Telemetry;

/// Where a device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Serving.
    Healthy,
    /// Serving, but something is off (hot, throttled, a non-fatal XID): given less work.
    Degraded,
    /// Not serving; retried after the backoff.
    Failed,
    /// The model is being reloaded on it to see whether it works again.
    Recovering,
}

impl HealthState {
    /// Every state, in the order metrics list them.
    pub const ALL: [Self; 4] = [
        Self::Healthy,
        Self::Degraded,
        Self::Failed,
        Self::Recovering,
    ];

    /// Its name in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Recovering => "recovering",
        }
    }

    /// Whether requests may be scheduled on the device.
    pub fn schedulable(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }
}

/// When readings make a device degraded or failed, and how long a failed one waits.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthThresholds {
    /// At or above: degraded.
    pub temperature_degraded_c: u32,
    /// At or above: failed.
    pub temperature_failed_c: u32,
    /// XID codes that fail the device (the rest degrade it for one reading).
    pub fatal_xids: Vec<u64>,
    /// First wait before a failed device is retried, in seconds.
    pub retry_seconds: f64,
    /// Longest wait between retries, in seconds.
    pub max_retry_seconds: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            temperature_degraded_c: 87,
            temperature_failed_c: 95,
            // NVIDIA's "reset the GPU" and "off the bus" codes: double-bit ECC (48),
            // row-remap failures (63, 64), NVLink (74), fallen off the bus (79), ECC
            // uncontained (94, 95), GSP errors (119, 120), uncorrectable memory (140).
            fatal_xids: vec![48, 63, 64, 74, 79, 92, 94, 95, 119, 120, 140],
            retry_seconds: 10.0,
            max_retry_seconds: 300.0,
        }
    }
}

/// A number of seconds from the config as a duration: negative or NaN is zero, huge is a
/// day (the longest wait that still means "retry").
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.clamp(0.0, 86_400.0)).unwrap_or(Duration::ZERO)
}

impl HealthThresholds {
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self.retry_seconds * 2f64.powi(failures.saturating_sub(1).min(20) as i32);
        seconds(doubled.min(self.max_retry_seconds))
    }

    /// What one reading says about the device; `baseline_ecc` is the uncorrected count when
    /// the agent started (earlier errors were already dealt with, e.g. by row remapping).
    pub fn verdict(&self, t: &Telemetry, baseline_ecc: Option<u64>) -> Verdict {
        if let Some(xid) = t.xid_errors.iter().find(|x| self.fatal_xids.contains(x)) {
            return Verdict::Failed(format!("XID {xid}"));
        }
        if let (Some(now), Some(base)) = (t.ecc_uncorrected, baseline_ecc)
            && now > base
        {
            return Verdict::Failed(format!("{} new uncorrected ECC errors", now - base));
        }
        match t.temperature_c {
            Some(c) if c >= self.temperature_failed_c => return Verdict::Failed(format!("{c} °C")),
            Some(c) if c >= self.temperature_degraded_c => {
                return Verdict::Degraded(format!("{c} °C"));
            }
            _ => {}
        }
        if let Some(xid) = t.xid_errors.first() {
            return Verdict::Degraded(format!("XID {xid}"));
        }
        let slowdown = t.throttle_reasons.iter().find(|r| r.starts_with("HW_"));
        match slowdown {
            Some(reason) => Verdict::Degraded(format!("throttled: {reason}")),
            None => Verdict::Healthy,
        }
    }
}

/// What a reading says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong.
    Healthy,
    /// Something off, with what.
    Degraded(String),
    /// Unusable, with why.
    Failed(String),
}

/// One device's health over time.
#[derive(Clone, Debug)]
pub struct DeviceHealth {
    state: HealthState,
    reason: Option<String>,
    /// Failures in a row (reset once the device has stayed up for the longest backoff).
    failures: u32,
    retry_at: Option<Instant>,
    up_since: Option<Instant>,
    /// The latest reading's verdict was failed (a retry waits for it to clear).
    reading_failed: bool,
}

impl Default for DeviceHealth {
    fn default() -> Self {
        Self {
            state: HealthState::Healthy,
            reason: None,
            failures: 0,
            retry_at: None,
            up_since: None,
            reading_failed: false,
        }
    }
}

impl DeviceHealth {
    /// The state now.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Why it is not healthy, when it is not.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes a reading's verdict; true when the device just failed.
    pub fn observe(&mut self, verdict: Verdict, t: &HealthThresholds, now: Instant) -> bool {
        self.reading_failed = matches!(verdict, Verdict::Failed(_));
        self.forget_old_failures(t, now);
        match (self.state, verdict) {
            (HealthState::Failed, _) => false,
            (_, Verdict::Failed(reason)) => {
                self.fail(reason, t, now);
                true
            }
            (HealthState::Recovering, _) => false,
            (_, Verdict::Degraded(reason)) => {
                self.set(HealthState::Degraded, Some(reason));
                false
            }
            (_, Verdict::Healthy) => {
                self.set(HealthState::Healthy, None);
                false
            }
        }
    }

    /// The engine on the device failed (a CUDA error, an engine error or panic); true when
    /// this changed the state (a device already failed stays as it is).
    pub fn engine_fault(&mut self, reason: String, t: &HealthThresholds, now: Instant) -> bool {
        if self.state == HealthState::Failed {
            return false;
        }
        self.fail(reason, t, now);
        true
    }

    /// Whether a failed device's backoff has passed and its readings allow a retry.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.state == HealthState::Failed
            && !self.reading_failed
            && self.retry_at.is_some_and(|at| now >= at)
    }

    /// How long until the retry is due (none when not failed, or while readings still
    /// fail it: the next reading decides).
    pub fn retry_in(&self, now: Instant) -> Option<Duration> {
        (self.state == HealthState::Failed && !self.reading_failed)
            .then(|| self.retry_at.map(|at| at.saturating_duration_since(now)))
            .flatten()
    }

    /// A retry starts: failed -> recovering.
    pub fn begin_recovery(&mut self) {
        if self.state == HealthState::Failed {
            self.state = HealthState::Recovering;
        }
    }

    /// The retry worked: recovering -> healthy.
    pub fn recovered(&mut self, now: Instant) {
        if self.state == HealthState::Recovering {
            self.set(HealthState::Healthy, None);
            self.up_since = Some(now);
        }
    }

    /// The retry failed: recovering -> failed, with a longer backoff.
    pub fn recovery_failed(&mut self, reason: String, t: &HealthThresholds, now: Instant) {
        if self.state == HealthState::Recovering {
            self.fail(reason, t, now);
        }
    }

    fn fail(&mut self, reason: String, t: &HealthThresholds, now: Instant) {
        self.failures += 1;
        self.retry_at = now.checked_add(t.backoff(self.failures)).or(Some(now));
        self.up_since = None;
        self.set(HealthState::Failed, Some(reason));
    }

    fn forget_old_failures(&mut self, t: &HealthThresholds, now: Instant) {
        let stable = seconds(t.max_retry_seconds);
        if self
            .up_since
            .is_some_and(|up| now.duration_since(up) >= stable)
        {
            self.failures = 0;
            self.up_since = None;
        }
    }

    fn set(&mut self, state: HealthState, reason: Option<String>) {
        self.state = state;
        self.reason = reason;
    }
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
