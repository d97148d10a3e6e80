//! The agent container's probes. Plain agents are probed on their gRPC health service
//! (ready once the model is loaded) and their HTTP `/healthz`. Under TLS kubelet can use
//! neither: its gRPC probes speak no TLS, and its HTTPS probes present no client
//! certificate, which mutual TLS requires. The agent's plain health port answers them.

use k8s_openapi::api::core::v1::{GRPCAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{GRPC_PORT, HEALTH_PORT_NAME, HTTP_PORT_NAME};

/// Startup allowance for loading the model: 120 probes, 5 s apart.
const STARTUP_FAILURES: i32 = 120;
const READY_PERIOD: i32 = 5;
const READY_FAILURES: i32 = 3;
const LIVE_PERIOD: i32 = 10;
const LIVE_FAILURES: i32 = 3;

/// The three probes of an agent container.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentProbes {
    /// Readiness: whether the agent takes requests.
    pub readiness: Probe,
    /// Startup: holds the other two while the model loads.
    pub startup: Probe,
    /// Liveness: restarts a hung agent.
    pub liveness: Probe,
}

/// The probes of an agent whose API ports speak TLS (`tls`) or not.
pub fn agent_probes(tls: bool) -> AgentProbes {
    if tls {
        AgentProbes {
            readiness: http_probe("/readyz", HEALTH_PORT_NAME, READY_PERIOD, READY_FAILURES),
            startup: http_probe("/readyz", HEALTH_PORT_NAME, READY_PERIOD, STARTUP_FAILURES),
            liveness: http_probe("/healthz", HEALTH_PORT_NAME, LIVE_PERIOD, LIVE_FAILURES),
        }
    } else {
        AgentProbes {
            readiness: grpc_probe(READY_PERIOD, READY_FAILURES),
            startup: grpc_probe(READY_PERIOD, STARTUP_FAILURES),
            liveness: http_probe("/healthz", HTTP_PORT_NAME, LIVE_PERIOD, LIVE_FAILURES),
        }
    }
}

fn grpc_probe(period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: GRPC_PORT,
            ..GRPCAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn http_probe(path: &str, port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}
