//! Problems the scheduler reports on a pool's agent pods.

use k8s_openapi::api::core::v1::Pod;

use super::status::{Problem, reason};

/// `InsufficientGPUs` when an agent pod cannot be scheduled for lack of `nvidia.com/gpu`
/// (the scheduler's own message is passed on).
pub fn gpu_problem(pods: &[Pod]) -> Option<Problem> {
    pods.iter().find_map(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let c = conditions
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        let message = c.message.clone().unwrap_or_default();
        (c.reason.as_deref() == Some("Unschedulable") && message.contains("nvidia.com/gpu")).then(
            || Problem {
                reason: reason::INSUFFICIENT_GPUS,
                message: format!("agent pods cannot be scheduled: {message}"),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(reason: &str, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": reason, "message": message}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_gpu_shortage_is_reported() {
        let short = pod(
            "Unschedulable",
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
        );
        let p = gpu_problem(&[
            pod("Unschedulable", "0/2 nodes: 2 Insufficient cpu."),
            short,
        ])
        .unwrap();
        assert_eq!(p.reason, "InsufficientGPUs");
        assert!(p.message.contains("Insufficient nvidia.com/gpu"));
        assert!(gpu_problem(&[pod("Unschedulable", "Insufficient memory")]).is_none());
        assert!(gpu_problem(&[]).is_none());
    }
}
