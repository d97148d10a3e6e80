use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Compute each agent pod asks for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.gpus > 0 || (!has(self.minGpuMemory) && (!has(self.gpuProducts) || size(self.gpuProducts) == 0))")
        .message("resources.minGpuMemory and resources.gpuProducts need resources.gpus > 0")
        .reason(Reason::FieldValueInvalid)
)]
pub struct ResourcesSpec {
    /// NVIDIA GPUs per agent (`nvidia.com/gpu`). 0 runs the model on CPU.
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,

    /// Smallest memory a GPU must have (for example `40Gi`); agents are placed only on nodes
    /// whose `nvidia.com/gpu.memory` label (MiB, from GPU feature discovery) is at least this.
    /// The label holds the memory the driver reports, which can be a little under the
    /// product's nominal size: an H100 80GB reports 81559 MiB (79.6Gi), so `80Gi` excludes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_gpu_memory: Option<Quantity>,

    /// GPU products the agents may run on, as in the `nvidia.com/gpu.product` node label
    /// (for example `NVIDIA-A100-SXM4-80GB`). Empty allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub gpu_products: Vec<String>,

    /// CPU each agent requests (and is limited to), for example `2` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Memory each agent requests (and is limited to), for example `4Gi`. It must hold the
    /// model on CPU, or the host-side copy while loading onto a GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}
