use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an InferencePool, written by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolStatus {
    /// Agent pods that exist (any state).
    #[serde(default)]
    pub replicas: i32,

    /// Agent pods that loaded the model and accept requests.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Label selector of the agent pods, as a string (used by the scale subresource and
    /// HorizontalPodAutoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The `metadata.generation` that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where clients send OpenAI requests for this pool's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// `Ready`, `Progressing` and `Degraded`, each with a stable reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The condition types an InferencePool reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// Every desired agent is ready at the current generation.
    Ready,
    /// A rollout or scale is under way.
    Progressing,
    /// The spec cannot be realised as asked (bad model source, too few GPUs, ...).
    Degraded,
    /// The built-in autoscaler scales the pool (False: a HorizontalPodAutoscaler does, or
    /// the load is not known yet); the reason says its last decision.
    ScalingActive,
}

impl ConditionType {
    /// The `type` string in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::ScalingActive => "ScalingActive",
        }
    }
}
