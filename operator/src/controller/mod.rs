//! The controller: reconciles InferencePools into agent Deployments, Services, ConfigMaps
//! and PodDisruptionBudgets. The builders here are pure functions of the pool, tested with
//! plain values; the reconcile loop applies them with server-side apply.

pub mod autoscale;
pub mod autoscaler;
pub mod children;
pub mod config;
pub mod decisions;
pub mod demand;
pub mod deployment;
pub mod error;
pub mod loads;
pub mod metrics;
pub mod names;
pub mod probes;
pub mod reconcile;
pub mod run;
pub mod scheduling;
pub mod status;
pub mod tls;
pub mod watch_backoff;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
