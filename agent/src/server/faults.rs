//! `POST /admin/faults`, compiled only with the `fault-injection` feature (test builds):
//! makes a device's next engine steps fail or panic, or feeds it an NVML reading, so that
//! tests drive the health monitor and the recovery path on any machine.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::gpu::telemetry::Telemetry;
use crate::scheduler::faults::StepFault;
use crate::serving::Agent;

/// What to inject into one device (its index in the inventory).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRequest {
    device: usize,
    #[serde(default)]
    step_errors: u32,
    #[serde(default)]
    step_panics: u32,
    #[serde(default)]
    reading: Option<Telemetry>,
}

/// Injects the faults; 404 for an unknown device, 503 while the model loads.
pub async fn inject(State(agent): State<Arc<Agent>>, Json(f): Json<FaultRequest>) -> Response {
    let Some(pool) = agent.engines() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response();
    };
    let injected = [
        (StepFault::Error, f.step_errors),
        (StepFault::Panic, f.step_panics),
    ];
    for (fault, steps) in injected.into_iter().filter(|(_, n)| *n > 0) {
        if !pool.inject_step_fault(f.device, fault, steps) {
            return (StatusCode::NOT_FOUND, "no such device").into_response();
        }
    }
    if let Some(reading) = f.reading {
        pool.inject_reading(f.device, reading).await;
    }
    tracing::warn!(device = f.device, "faults injected");
    StatusCode::NO_CONTENT.into_response()
}
