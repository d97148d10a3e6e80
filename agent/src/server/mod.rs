//! The agent's front ends: HTTP (OpenAI API, health, metrics) and gRPC (the gateway's
//! `Agent` service and grpc.health.v1), and the process life around them.

pub mod caching;
pub mod deadline;
pub mod devices;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod grpc;
pub mod http;
pub mod respond;
pub mod run;
pub mod tls;
pub mod workers;
