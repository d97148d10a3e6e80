use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Built-in autoscaling from the load the agents report to the gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas")
        .reason(Reason::FieldValueInvalid)
)]
pub struct AutoscalingSpec {
    /// Fewest agents to keep. 0 lets an idle pool scale to zero; the first request then
    /// waits for an agent to start.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,

    /// Most agents to run.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// Load per agent to aim for, in (0, 1]: its running plus queued requests (and those the
    /// gateways hold for the pool) over its batch size. Above it the pool grows at once;
    /// below it for `scaleDownDelaySeconds`, it shrinks by one agent.
    #[serde(default = "default_target_load")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0")
        .message("autoscaling.targetLoad must be in (0, 1]"))]
    pub target_load: f64,

    /// How long the load must stay below target before an agent is removed, in seconds.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
}

fn default_min_replicas() -> i32 {
    1
}
fn default_target_load() -> f64 {
    0.7
}
fn default_scale_down_delay() -> i32 {
    300
}

impl AutoscalingSpec {
    /// Autoscaling between `min` and `max` agents with the default target and delay.
    pub fn between(min_replicas: i32, max_replicas: i32) -> Self {
        Self {
            min_replicas,
            max_replicas,
            target_load: default_target_load(),
            scale_down_delay_seconds: default_scale_down_delay(),
        }
    }
}
