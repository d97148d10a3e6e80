//! Problems the scheduler reports on a pool's agent pods.

use k8s_openapi::api::core::v1::Pod;

use super::deployment::quantity_mib;
use super::status::{Problem, reason};
use crate::api::ResourcesSpec;

/// What the scheduler writes for nodes that fail the pod's node affinity or selector.
const AFFINITY_MISMATCH: &str = "node affinity/selector";

/// `InsufficientGPUs` when an agent pod cannot be scheduled for lack of `nvidia.com/gpu`
/// or, for a pool that asks for GPU products or memory (`resources`), because no node
/// matches the node affinity that carries them. The scheduler's own message is passed on.
pub fn gpu_problem(resources: &ResourcesSpec, pods: &[Pod]) -> Option<Problem> {
    let wanted = wanted_gpu(resources);
    pods.iter().find_map(|pod| {
        let message = unschedulable(pod)?;
        let gpus = message.contains("nvidia.com/gpu");
        let message = match &wanted {
            Some(w) if gpus || message.contains(AFFINITY_MISMATCH) => {
                format!("no node the agents may run on has a free GPU {w}: {message}")
            }
            None if gpus => format!("agent pods cannot be scheduled: {message}"),
            _ => return None,
        };
        Some(Problem {
            reason: reason::INSUFFICIENT_GPUS,
            message,
        })
    })
}

/// The scheduler's message when `pod` is `Unschedulable`.
fn unschedulable(pod: &Pod) -> Option<&str> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (c.reason.as_deref() == Some("Unschedulable")).then(|| c.message.as_deref().unwrap_or(""))
}

/// The GPU the pool's node affinity asks for, in words ("of product A or B with at least
/// 40Gi of memory"); `None` when it asks for no product and no memory. A memory that
/// makes no affinity rule (unparseable) is left out, as the Deployment leaves it out.
fn wanted_gpu(r: &ResourcesSpec) -> Option<String> {
    let mut words = Vec::new();
    if !r.gpu_products.is_empty() {
        words.push(format!("of product {}", r.gpu_products.join(" or ")));
    }
    if let Some(q) = r
        .min_gpu_memory
        .as_ref()
        .filter(|q| quantity_mib(q).is_some())
    {
        words.push(format!("with at least {} of memory", q.0));
    }
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_GPU: &str = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.";
    const NO_MATCH: &str = "0/2 nodes are available: 2 node(s) didn't match Pod's node \
        affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful \
        for scheduling.";

    fn pod(reason: &str, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": reason, "message": message}]}
        }))
        .unwrap()
    }

    fn resources(json: serde_json::Value) -> ResourcesSpec {
        serde_json::from_value(json).unwrap()
    }

    fn any_gpu() -> ResourcesSpec {
        resources(serde_json::json!({"gpus": 1}))
    }

    #[test]
    fn only_gpu_shortage_is_reported() {
        let p = gpu_problem(
            &any_gpu(),
            &[
                pod("Unschedulable", "0/2 nodes: 2 Insufficient cpu."),
                pod("Unschedulable", NO_GPU),
            ],
        )
        .unwrap();
        assert_eq!(p.reason, "InsufficientGPUs");
        assert_eq!(
            p.message,
            format!("agent pods cannot be scheduled: {NO_GPU}")
        );
        let memory = [pod("Unschedulable", "Insufficient memory")];
        assert!(gpu_problem(&any_gpu(), &memory).is_none());
        assert!(gpu_problem(&any_gpu(), &[]).is_none());
    }

    #[test]
    fn an_affinity_mismatch_is_a_gpu_problem_only_when_the_pool_asks_for_a_gpu_kind() {
        let pods = [pod("Unschedulable", NO_MATCH)];
        assert!(gpu_problem(&any_gpu(), &pods).is_none());
        let a100 = resources(serde_json::json!({"gpus": 1,
            "gpuProducts": ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-SXM4-80GB"],
            "minGpuMemory": "40Gi"}));
        let p = gpu_problem(&a100, &pods).unwrap();
        assert_eq!(p.reason, "InsufficientGPUs");
        assert_eq!(
            p.message,
            format!(
                "no node the agents may run on has a free GPU of product NVIDIA-A100-SXM4-40GB \
                 or NVIDIA-A100-SXM4-80GB with at least 40Gi of memory: {NO_MATCH}"
            )
        );
        let big = resources(serde_json::json!({"gpus": 1, "minGpuMemory": "96Gi"}));
        let p = gpu_problem(&big, &pods).unwrap();
        assert!(
            p.message.starts_with(
                "no node the agents may run on has a free GPU with at least 96Gi of memory: 0/2"
            ),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_gpu_kind_is_named_when_its_nodes_are_full() {
        let h100 = resources(serde_json::json!({"gpus": 8,
            "gpuProducts": ["NVIDIA-H100-80GB-HBM3"]}));
        let p = gpu_problem(&h100, &[pod("Unschedulable", NO_GPU)]).unwrap();
        assert_eq!(
            p.message,
            format!(
                "no node the agents may run on has a free GPU of product NVIDIA-H100-80GB-HBM3: {NO_GPU}"
            )
        );
    }

    #[test]
    fn pods_not_unschedulable_are_no_problem() {
        let h100 = resources(serde_json::json!({"gpus": 1,
            "gpuProducts": ["NVIDIA-H100-80GB-HBM3"]}));
        let pending = [pod("SchedulerError", NO_MATCH)];
        assert!(gpu_problem(&h100, &pending).is_none());
        let scheduled: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap();
        assert!(gpu_problem(&h100, &[scheduled]).is_none());
    }

    #[test]
    fn an_unparseable_memory_is_not_named() {
        let odd = resources(serde_json::json!({"gpus": 1, "minGpuMemory": "lots"}));
        assert!(gpu_problem(&odd, &[pod("Unschedulable", NO_MATCH)]).is_none());
    }
}
