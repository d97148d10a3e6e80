use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    AgentTemplate, AutoscalingSpec, BatchingSpec, CacheSpec, InferencePoolStatus, ModelSpec,
    ResourcesSpec, RoutingSpec,
};

/// InferencePoolSpec is the desired state of a pool of inference agents serving one model
/// behind one OpenAI-compatible endpoint.
// The printcolumn(...) lists repeat `type_ = ...` by design; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "inferpool.dev",
    version = "v1alpha1",
    kind = "InferencePool",
    plural = "inferencepools",
    singular = "inferencepool",
    shortname = "ipool",
    category = "inferpool",
    namespaced,
    cel,
    status = "InferencePoolStatus",
    derive = "PartialEq",
    doc = "InferencePool runs one model on a pool of agent pods and serves it behind one \
           OpenAI-compatible endpoint, with batching, caching and load-aware routing.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".spec.model.source",
        description = "Where the agents load the model from"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired number of agents"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Agents that loaded the model and accept requests"
    ),
    printcolumn(
        name = "Strategy",
        type_ = "string",
        json_path = ".spec.routing.strategy",
        description = "How the gateway picks an agent for each request"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// The model every agent of the pool loads and serves.
    pub model: ModelSpec,

    /// Desired number of agent pods. Moved by `kubectl scale`, a HorizontalPodAutoscaler or
    /// the built-in autoscaler (when `autoscaling` is set). 0 stops every agent.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Built-in autoscaling from the agents' reported load. When set, the operator moves
    /// `replicas` between `minReplicas` and `maxReplicas`; leave it unset to scale by hand
    /// or with a HorizontalPodAutoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Compute each agent asks for: GPUs, GPU memory and product, CPU and memory.
    #[serde(default)]
    pub resources: ResourcesSpec,

    /// How each agent groups queued requests into batches for the model.
    #[serde(default)]
    pub batching: BatchingSpec,

    /// The agents' response cache.
    #[serde(default)]
    pub cache: CacheSpec,

    /// How the gateway spreads requests over the agents and survives their failures.
    #[serde(default)]
    pub routing: RoutingSpec,

    /// Pod-level settings for the agent pods: image, placement and extra environment.
    #[serde(default)]
    pub template: AgentTemplate,
}

fn default_replicas() -> i32 {
    1
}

impl InferencePoolSpec {
    /// A spec with every optional part at its default, serving `model`.
    pub fn with_model(model: ModelSpec) -> Self {
        Self {
            model,
            replicas: default_replicas(),
            autoscaling: None,
            resources: ResourcesSpec::default(),
            batching: BatchingSpec::default(),
            cache: CacheSpec::default(),
            routing: RoutingSpec::default(),
            template: AgentTemplate::default(),
        }
    }
}
