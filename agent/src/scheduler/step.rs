//! One forward pass of the batch, with faults told apart: a request's own problem fails
//! that batch's members; anything else (a tensor error, on CUDA a failed kernel or
//! allocation; a panic) is the device's, and stops the engine.

use super::faults::{StepFault, StepFaults};
use crate::engine::model::{Llama, ModelError};
use crate::engine::rows::{Padding, SeqStep};

/// Why a step gave no logits.
pub(super) enum StepError {
    /// The batch cannot run as planned (a sequence past the context): its members fail.
    Request(ModelError),
    /// The device or the engine failed (a tensor op's error, a panic): the engine stops.
    Device(String),
}

/// One forward pass; a panic inside it is caught and read as a device failure, as is any
/// tensor error (on CUDA, a failed kernel or allocation).
pub(super) fn step(
    model: &Llama,
    steps: &mut [SeqStep<'_>],
    padding: Padding,
    faults: &StepFaults,
) -> Result<candle_core::Tensor, StepError> {
    let run = std::panic::AssertUnwindSafe(|| match faults.take() {
        Some(StepFault::Panic) => panic!("injected engine panic"),
        Some(StepFault::Error) => Err(StepError::Device("injected step error".to_owned())),
        None => model.step_padded(steps, padding).map_err(|e| match e {
            ModelError::TooLong(..) => StepError::Request(e),
            other => StepError::Device(other.to_string()),
        }),
    });
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let text = panic_text(&*panic);
        Err(StepError::Device(format!("engine panicked: {text}")))
    })
}

/// A panic's message, when it has one.
pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}
