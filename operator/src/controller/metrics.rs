//! Controller metrics: reconciles, errors by a fixed error type, reconcile duration, and
//! whether this replica leads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the error counter: one of `Error::error_type()`'s fixed values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's type.
    pub error_type: &'static str,
}

/// The controller's metrics, registered under `inferpool_controller_*`.
#[derive(Debug, Clone)]
pub struct ControllerMetrics {
    /// Reconciles finished (successful or not).
    pub reconciles: Counter,
    /// Reconciles skipped while the leader was fenced (stalled past its lease's grace).
    pub fenced: Counter,
    /// Failed reconciles by error type.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            fenced: Counter::default(),
            errors: Family::default(),
            // 1 ms .. ~16 s
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            leader: Gauge::default(),
        }
    }
}

impl ControllerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("inferpool_controller");
        r.register("reconciles", "Reconciles finished", m.reconciles.clone());
        r.register(
            "fenced_reconciles",
            "Reconciles skipped while stalled past the lease's grace",
            m.fenced.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by error type",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            m.duration.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader lease",
            m.leader.clone(),
        );
        m
    }
}
