//! `inferpool_gateway_agent_devices{pool,agent,health}`: each agent's devices by health
//! state as its last load report gave them, so that a degraded or failed GPU shows at
//! the gateway that routes around it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::gateway::core::pick::DeviceCounts;

const HEALTH: [&str; 4] = ["healthy", "degraded", "failed", "recovering"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabels {
    pool: String,
    agent: String,
    health: &'static str,
}

/// The gauge family.
#[derive(Debug, Default)]
pub(super) struct AgentDevices {
    family: Family<DeviceLabels, Gauge>,
}

impl AgentDevices {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "agent_devices",
            "Devices of each agent by health state (healthy, degraded, failed, recovering)",
            self.family.clone(),
        );
    }

    pub(super) fn observe(&self, pool: &str, agent: &str, c: &DeviceCounts) {
        let counts = [c.healthy, c.degraded, c.failed, c.recovering];
        for (health, n) in HEALTH.into_iter().zip(counts) {
            let labels = DeviceLabels {
                pool: pool.to_owned(),
                agent: agent.to_owned(),
                health,
            };
            self.family.get_or_create(&labels).set(i64::from(n));
        }
    }

    pub(super) fn remove(&self, pool: &str, agent: &str) {
        for health in HEALTH {
            self.family.remove(&DeviceLabels {
                pool: pool.to_owned(),
                agent: agent.to_owned(),
                health,
            });
        }
    }
}
