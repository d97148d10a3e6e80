//! The controller against the real test control plane: it runs in this process (the real
//! reconcile loop, not a mock), with fake GPU nodes from kwok. Fake pods' addresses are
//! never dialed: only the controller runs here, no gateway.

use std::time::Duration;

use inferpool_e2e::cluster::cluster;
use inferpool_e2e::parts::repo_root;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use inferpool_operator::controller::deployment::AgentImages;
use inferpool_operator::controller::metrics::ControllerMetrics;
use inferpool_operator::controller::run::{ControllerSettings, run_controller};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

const LIMIT: Duration = Duration::from_secs(90);

fn start_controller(client: kube::Client) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = ControllerSettings {
        images: AgentImages {
            cpu: "registry.invalid/agent:cpu".into(),
            cuda: "registry.invalid/agent:cuda".into(),
        },
        gateway: Some("http://gateway.test:8080/v1".into()),
    };
    tokio::spawn(run_controller(
        client,
        settings,
        ControllerMetrics::default(),
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

fn condition(pool: &InferencePool, type_: &str) -> Option<(String, String)> {
    let c = pool
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_becomes_agents_scales_and_reports_problems() -> anyhow::Result<()> {
    let c = cluster()?;
    let crd = repo_root().join("crds/inferencepools.inferpool.dev.yaml");
    c.kubectl(&["apply", "-f", crd.to_str().unwrap_or_default()])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferencepools.inferpool.dev",
    ])?;
    let ns = c.namespace("controller")?;
    let client = c.client().await?;
    let _stop = start_controller(client.clone());

    let pool = "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: chat}\n\
                spec: {model: {source: bundled}, replicas: 2, resources: {gpus: 1}}\n";
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], pool)?;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns.name());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());

    // Children exist with the expected shape.
    let d = wait_until(LIMIT, || async {
        deployments.get_opt("chat-agent").await.ok().flatten()
    })
    .await?;
    assert_eq!(d.spec.replicas, Some(2));
    let owner = &d.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("InferencePool", "chat", Some(true))
    );
    let svc = Api::<Service>::namespaced(client.clone(), ns.name())
        .get("chat-agent")
        .await?;
    assert_eq!(svc.spec.and_then(|s| s.cluster_ip).as_deref(), Some("None"));
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns.name())
        .get("chat-agent")
        .await?;
    assert!(cm.data.unwrap_or_default()["agent.json"].contains("\"gpus\": 1"));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns.name());
    assert!(pdbs.get_opt("chat-agent").await?.is_some());

    // Pods run on the fake GPU nodes and the pool reports Ready with counts.
    let ready = wait_until(LIMIT, || async {
        let p = pools.get("chat").await.ok()?;
        (condition(&p, "Ready")? == ("True".into(), "AgentsReady".into())).then_some(p)
    })
    .await?;
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!((status.replicas, status.ready_replicas), (2, 2));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/name=inferpool-agent,inferpool.dev/pool=chat")
    );
    let pods = Api::<Pod>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default().labels("inferpool.dev/pool=chat"))
        .await?;
    assert!(pods.items.iter().all(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| n.starts_with("fake-gpu-"))
    }));

    // The scale subresource moves the Deployment; one agent needs no PDB.
    c.kubectl(&["scale", "-n", ns.name(), "ipool/chat", "--replicas=1"])?;
    wait_until(LIMIT, || async {
        let d = deployments.get("chat-agent").await.ok()?;
        let gone = pdbs.get_opt("chat-agent").await.ok()?.is_none();
        (d.spec.replicas == Some(1) && gone).then_some(())
    })
    .await?;
    wait_until(LIMIT, || async {
        let s = pools.get("chat").await.ok()?.status?;
        (s.ready_replicas == 1 && s.replicas == 1).then_some(())
    })
    .await?;

    // A source the controller cannot realise: Degraded with a stable reason, and an Event.
    let bad = "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: broken}\n\
               spec: {model: {source: \"pvc://weights/../etc\"}}\n";
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], bad)?;
    wait_until(LIMIT, || async {
        let p = pools.get("broken").await.ok()?;
        (condition(&p, "Degraded")? == ("True".into(), "ModelSourceInvalid".into())).then_some(())
    })
    .await?;
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        ns.name(),
        "--field-selector",
        "reason=ModelSourceInvalid",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "no ModelSourceInvalid event");
    Ok(())
}
