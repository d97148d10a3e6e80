//! Each autoscaled pool's latest scaling decision, as its `ScalingActive` condition says
//! it: written by the autoscaler, read by the reconciler when it writes the status.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The `ScalingActive` condition of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    /// Whether the built-in autoscaler scales it.
    pub active: bool,
    /// The condition's reason.
    pub reason: &'static str,
    /// Its message.
    pub message: String,
}

/// Each autoscaled pool's latest `Scaling`, by `namespace/name`.
#[derive(Debug, Default)]
pub struct Decisions(Mutex<HashMap<String, Scaling>>);

impl Decisions {
    /// The latest of pool `key`.
    pub fn of(&self, key: &str) -> Option<Scaling> {
        table(&self.0).get(key).cloned()
    }

    /// Records `scaling` for `key`; true when its status or reason changed.
    pub fn record(&self, key: String, scaling: Scaling) -> bool {
        let mut table = table(&self.0);
        let changed = table
            .get(&key)
            .is_none_or(|old| (old.active, old.reason) != (scaling.active, scaling.reason));
        table.insert(key, scaling);
        changed
    }
}

fn table<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
