//! The controller against the real test control plane, with fake GPU nodes from kwok. One
//! real controller runs in this process for all tests (the real reconcile loop, no mock);
//! fake pods' addresses are never dialed: no gateway runs here.

use std::time::Duration;

use inferpool_e2e::cluster::{Cluster, TestNamespace, cluster};
use inferpool_e2e::controller::{install_crd, shared_controller};
use inferpool_e2e::pools::{condition, pool_yaml, until_ready, versions};
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

const LIMIT: Duration = Duration::from_secs(90);

struct Fixture {
    c: &'static Cluster,
    ns: TestNamespace,
    client: kube::Client,
}

impl Fixture {
    async fn new(test: &str) -> anyhow::Result<Self> {
        install_crd()?;
        shared_controller()?;
        let c = cluster()?;
        Ok(Self {
            c,
            ns: c.namespace(test)?,
            client: c.client().await?,
        })
    }
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.ns.name())
    }
    fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.c
            .kubectl_stdin(&["apply", "-n", self.ns.name(), "-f", "-"], yaml)
    }
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.ns.name()];
        all.extend_from_slice(args);
        self.c.kubectl(&all)
    }
    async fn until_ready(&self, name: &str) -> anyhow::Result<InferencePool> {
        let pool = until_ready(&self.api::<InferencePool>(), name, LIMIT).await?;
        assert_eq!(
            condition(&pool, "Ready"),
            Some(("True".into(), "AgentsReady".into()))
        );
        Ok(pool)
    }
}

#[tokio::test]
async fn a_pool_becomes_agents_on_gpu_nodes_and_reports_ready() -> anyhow::Result<()> {
    let f = Fixture::new("ready").await?;
    f.apply(&pool_yaml(
        "chat",
        "{model: {source: bundled}, replicas: 2, resources: {gpus: 1}}",
    ))?;
    let ready = f.until_ready("chat").await?;
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/name=inferpool-agent,inferpool.dev/pool=chat")
    );
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://gateway.test:8080/v1 (model \"chat\")")
    );

    let d = f.api::<Deployment>().get("chat-agent").await?;
    assert_eq!(d.spec.replicas, Some(2));
    let owner = &d.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("InferencePool", "chat", Some(true))
    );
    let svc = f.api::<Service>().get("chat-agent").await?;
    assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    let cm = f.api::<ConfigMap>().get("chat-agent").await?;
    assert!(cm.data.unwrap_or_default()["agent.json"].contains("\"gpus\": 1"));
    assert!(
        f.api::<PodDisruptionBudget>()
            .get_opt("chat-agent")
            .await?
            .is_some()
    );
    // Agents admit gRPC only from the operator's pods (test settings: inferpool-system).
    let np = f.api::<NetworkPolicy>().get("chat-agent").await?;
    let ingress = serde_json::to_value(np.spec.and_then(|s| s.ingress))?;
    let from = &ingress[0]["from"][0]["namespaceSelector"]["matchLabels"];
    assert_eq!(from["kubernetes.io/metadata.name"], "inferpool-system");
    let pods = f
        .api::<Pod>()
        .list(&ListParams::default().labels("inferpool.dev/pool=chat"))
        .await?;
    assert_eq!(pods.items.len(), 2);
    for pod in pods.items {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(node.starts_with("fake-gpu-"), "scheduled on {node}");
    }
    Ok(())
}

#[tokio::test]
async fn the_scale_subresource_moves_the_agents() -> anyhow::Result<()> {
    let f = Fixture::new("scale").await?;
    f.apply(&pool_yaml("s", "{model: {}, replicas: 1}"))?;
    f.until_ready("s").await?;
    assert!(
        f.api::<PodDisruptionBudget>()
            .get_opt("s-agent")
            .await?
            .is_none()
    );
    f.kubectl(&["scale", "ipool/s", "--replicas=3"])?;
    let up = f.until_ready("s").await?;
    assert_eq!(up.status.map(|s| s.ready_replicas), Some(3));
    assert!(
        f.api::<PodDisruptionBudget>()
            .get_opt("s-agent")
            .await?
            .is_some()
    );
    f.kubectl(&["scale", "ipool/s", "--replicas=1"])?;
    let down = f.until_ready("s").await?;
    assert_eq!(down.status.map(|s| s.ready_replicas), Some(1));
    assert!(
        f.api::<PodDisruptionBudget>()
            .get_opt("s-agent")
            .await?
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn a_spec_change_rolls_the_agents() -> anyhow::Result<()> {
    let f = Fixture::new("roll").await?;
    f.apply(&pool_yaml("r", "{model: {}, replicas: 2}"))?;
    f.until_ready("r").await?;
    let before = template_checksum(&f.api::<Deployment>().get("r-agent").await?);
    f.apply(&pool_yaml(
        "r",
        "{model: {}, replicas: 2, batching: {maxBatchSize: 64}}",
    ))?;
    let rolled = f.until_ready("r").await?;
    assert_eq!(rolled.metadata.generation, Some(2));
    let after = template_checksum(&f.api::<Deployment>().get("r-agent").await?);
    assert_ne!(
        before, after,
        "the config checksum must change the pod template"
    );
    let sets = f
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("inferpool.dev/pool=r"))
        .await?;
    assert_eq!(
        sets.items.len(),
        2,
        "a rolling update leaves an old and a new ReplicaSet"
    );
    let cm = f.api::<ConfigMap>().get("r-agent").await?;
    assert!(cm.data.unwrap_or_default()["agent.json"].contains("\"maxBatchSize\": 64"));
    Ok(())
}

fn template_checksum(d: &Deployment) -> Option<String> {
    d.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("inferpool.dev/config-checksum")
        .cloned()
}

#[tokio::test]
async fn deleting_a_pool_garbage_collects_its_children() -> anyhow::Result<()> {
    let f = Fixture::new("gc").await?;
    f.apply(&pool_yaml("g", "{model: {}, replicas: 2}"))?;
    f.until_ready("g").await?;
    f.api::<InferencePool>()
        .delete("g", &DeleteParams::default())
        .await?;
    wait_until(LIMIT, || async {
        let d = f.api::<Deployment>().get_opt("g-agent").await.ok()?;
        let s = f.api::<Service>().get_opt("g-agent").await.ok()?;
        let c = f.api::<ConfigMap>().get_opt("g-agent").await.ok()?;
        let p = f
            .api::<PodDisruptionBudget>()
            .get_opt("g-agent")
            .await
            .ok()?;
        (d.is_none() && s.is_none() && c.is_none() && p.is_none()).then_some(())
    })
    .await
}

#[tokio::test]
async fn children_changed_by_hand_are_put_back() -> anyhow::Result<()> {
    let f = Fixture::new("heal").await?;
    f.apply(&pool_yaml("h", "{model: {}, replicas: 2}"))?;
    f.until_ready("h").await?;
    f.api::<Service>()
        .delete("h-agent", &DeleteParams::default())
        .await?;
    f.kubectl(&["scale", "deployment/h-agent", "--replicas=5"])?;
    let cms = f.api::<ConfigMap>();
    cms.patch(
        "h-agent",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"agent.json": "{}"}})),
    )
    .await?;
    wait_until(LIMIT, || async {
        let svc = f.api::<Service>().get_opt("h-agent").await.ok()??;
        let d = f.api::<Deployment>().get("h-agent").await.ok()?;
        let cm = cms.get("h-agent").await.ok()?;
        let config_restored = cm.data?.get("agent.json")?.contains("servedName");
        (svc.metadata.uid.is_some() && d.spec.replicas == Some(2) && config_restored).then_some(())
    })
    .await
}

#[tokio::test]
async fn an_unchanged_pool_is_not_written_again() -> anyhow::Result<()> {
    let f = Fixture::new("quiet").await?;
    f.apply(&pool_yaml("q", "{model: {}, replicas: 2}"))?;
    f.until_ready("q").await?;
    let before = versions(&f.client, f.ns.name(), "q").await?;
    // Deleting the PDB forces a full reconcile (its return proves the reconcile ran); every
    // other child and the status are unchanged, so none of them may be written.
    let pdbs = f.api::<PodDisruptionBudget>();
    let old = pdbs.get("q-agent").await?.metadata.uid;
    pdbs.delete("q-agent", &DeleteParams::default()).await?;
    wait_until(LIMIT, || async {
        let pdb = pdbs.get_opt("q-agent").await.ok()??;
        (pdb.metadata.uid != old).then_some(())
    })
    .await?;
    assert_eq!(
        before,
        versions(&f.client, f.ns.name(), "q").await?,
        "an unchanged pool or child was written"
    );
    Ok(())
}

#[tokio::test]
async fn problems_show_as_degraded_with_a_reason_and_an_event() -> anyhow::Result<()> {
    let f = Fixture::new("degraded").await?;
    let pools = f.api::<InferencePool>();
    f.apply(&pool_yaml("huge", "{model: {}, resources: {gpus: 16}}"))?;
    f.apply(&pool_yaml(
        "broken",
        "{model: {source: \"pvc://weights/../etc\"}}",
    ))?;
    for (name, reason) in [
        ("huge", "InsufficientGPUs"),
        ("broken", "ModelSourceInvalid"),
    ] {
        let p = wait_until(LIMIT, || async {
            let p = pools.get(name).await.ok()?;
            (condition(&p, "Degraded")? == ("True".into(), reason.into())).then_some(p)
        })
        .await?;
        assert_eq!(
            condition(&p, "Ready"),
            Some(("False".into(), reason.into()))
        );
        let selector = format!("reason={reason},involvedObject.name={name}");
        let events = f.kubectl(&["get", "events", "--field-selector", &selector, "-o", "name"])?;
        assert!(!events.trim().is_empty(), "no {reason} event for {name}");
    }
    Ok(())
}

#[tokio::test]
async fn a_pool_asking_for_a_gpu_product_and_memory_runs_on_nodes_that_have_them()
-> anyhow::Result<()> {
    let f = Fixture::new("gpu-kind").await?;
    // The fake nodes' H100s report 81559 MiB (79.6Gi), as real ones do: `80Gi` would exclude
    // them, so the pool asks for 79Gi.
    f.apply(&pool_yaml(
        "h100",
        "{model: {}, resources: {gpus: 1, gpuProducts: [NVIDIA-H100-80GB-HBM3], \
         minGpuMemory: 79Gi}}",
    ))?;
    f.until_ready("h100").await?;
    let d = f.api::<Deployment>().get("h100-agent").await?;
    let affinity = serde_json::to_value(d.spec.template.spec.and_then(|s| s.affinity))?;
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        serde_json::json!({"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.product", "operator": "In",
             "values": ["NVIDIA-H100-80GB-HBM3"]},
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["80895"]}]}]})
    );
    let pods = f
        .api::<Pod>()
        .list(&ListParams::default().labels("inferpool.dev/pool=h100"))
        .await?;
    assert_eq!(pods.items.len(), 1);
    for pod in pods.items {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(node.starts_with("fake-gpu-"), "scheduled on {node}");
    }
    Ok(())
}

#[tokio::test]
async fn a_gpu_product_or_memory_that_no_node_has_is_insufficient_gpus() -> anyhow::Result<()> {
    let f = Fixture::new("gpu-missing").await?;
    let pools = f.api::<InferencePool>();
    f.apply(&pool_yaml(
        "a100",
        "{model: {}, resources: {gpus: 1, gpuProducts: [NVIDIA-A100-SXM4-40GB]}}",
    ))?;
    f.apply(&pool_yaml(
        "big",
        "{model: {}, resources: {gpus: 1, minGpuMemory: 96Gi}}",
    ))?;
    for (name, asked) in [
        ("a100", "of product NVIDIA-A100-SXM4-40GB:"),
        ("big", "with at least 96Gi of memory:"),
    ] {
        let p = wait_until(LIMIT, || async {
            let p = pools.get(name).await.ok()?;
            (condition(&p, "Degraded")? == ("True".into(), "InsufficientGPUs".into())).then_some(p)
        })
        .await?;
        assert_eq!(
            condition(&p, "Ready"),
            Some(("False".into(), "InsufficientGPUs".into()))
        );
        let status = p.status.unwrap_or_default();
        let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded");
        let message = degraded.map(|c| c.message.as_str()).unwrap_or_default();
        assert!(
            message.contains(asked) && message.contains("node affinity/selector"),
            "{name}: {message}"
        );
        let selector = format!("reason=InsufficientGPUs,involvedObject.name={name}");
        let events = f.kubectl(&["get", "events", "--field-selector", &selector, "-o", "name"])?;
        assert!(
            !events.trim().is_empty(),
            "no InsufficientGPUs event for {name}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_horizontal_pod_autoscaler_can_target_a_pool() -> anyhow::Result<()> {
    let f = Fixture::new("hpa").await?;
    f.apply(&pool_yaml("auto", "{model: {}, replicas: 1}"))?;
    f.until_ready("auto").await?;
    f.apply(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: auto}\nspec:\n  \
         scaleTargetRef: {apiVersion: inferpool.dev/v1alpha1, kind: InferencePool, name: auto}\n  \
         minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource:\n      \
         name: cpu\n      target: {type: Utilization, averageUtilization: 50}\n",
    )?;
    // The HPA controller reads the pool through its scale subresource.
    let hpas = f.api::<HorizontalPodAutoscaler>();
    wait_until(LIMIT, || async {
        let hpa = hpas.get("auto").await.ok()?;
        let conditions = hpa.status?.conditions?;
        let c = conditions.into_iter().find(|c| c.type_ == "AbleToScale")?;
        (c.status == "True" && c.reason.as_deref() == Some("SucceededGetScale")).then_some(())
    })
    .await
}
