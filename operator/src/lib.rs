//! inferpool operator: the `InferencePool` API, and (as they land) the controller, the
//! gateway, the autoscaler and local mode.

pub mod api;
pub mod controller;
pub mod crd;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod gateway_demand;
pub mod gateway_run;
pub mod leader;
pub mod local;
pub mod local_agent;
pub mod local_scale;
pub mod manifest;
pub mod rbac;
pub mod run;
pub mod server;
