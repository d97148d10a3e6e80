//! Engine faults on demand, for tests: with the `fault-injection` feature (which test
//! builds enable and release images never do) a switch makes an engine's next steps fail
//! with an error or a panic, as a CUDA error or a crashed kernel would. Without the
//! feature the switch is an empty type and no step ever checks anything.

#[cfg(feature = "fault-injection")]
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicU32, Ordering};

/// What a faulty step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepFault {
    /// Returns an error, as a failed CUDA call does.
    Error,
    /// Panics inside the model's forward pass.
    Panic,
}

/// The switch shared by an engine loop and whoever injects its faults.
#[derive(Clone, Debug, Default)]
pub struct StepFaults {
    #[cfg(feature = "fault-injection")]
    errors: Arc<AtomicU32>,
    #[cfg(feature = "fault-injection")]
    panics: Arc<AtomicU32>,
}

impl StepFaults {
    /// Makes the next `steps` steps fail with `fault`.
    #[cfg(feature = "fault-injection")]
    pub fn inject(&self, fault: StepFault, steps: u32) {
        let counter = match fault {
            StepFault::Error => &self.errors,
            StepFault::Panic => &self.panics,
        };
        counter.fetch_add(steps, Ordering::SeqCst);
    }

    /// The fault this step must show, if one was injected (and uses it up).
    #[cfg(feature = "fault-injection")]
    pub fn take(&self) -> Option<StepFault> {
        let take = |c: &AtomicU32| {
            c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if take(&self.panics) {
            return Some(StepFault::Panic);
        }
        take(&self.errors).then_some(StepFault::Error)
    }

    /// Never a fault without the `fault-injection` feature.
    #[cfg(not(feature = "fault-injection"))]
    pub fn take(&self) -> Option<StepFault> {
        None
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;

    #[test]
    fn injected_faults_are_used_up_one_step_each() {
        let faults = StepFaults::default();
        assert_eq!(faults.take(), None);
        faults.inject(StepFault::Error, 2);
        faults.inject(StepFault::Panic, 1);
        let seen: Vec<_> = (0..4).map(|_| faults.clone().take()).collect();
        let (e, p) = (Some(StepFault::Error), Some(StepFault::Panic));
        assert_eq!(seen, vec![p, e, e, None]);
    }
}
