//! The test control plane itself, against the real kube-apiserver, controller-manager,
//! scheduler and kwok built by `hack/controlplane/build`.

use std::time::Duration;

use inferpool_e2e::cluster::cluster;
use inferpool_e2e::controller::{install_crd, install_keda_crd};
use inferpool_e2e::parts::repo_root;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::{InferencePool, InferencePoolSpec, ModelSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};

#[test]
fn the_crd_is_established_and_explained() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let explain = c.kubectl(&["explain", "inferencepool.spec.batching"])?;
    assert!(
        explain.contains("How each agent groups queued requests"),
        "{explain}"
    );
    assert!(explain.contains("maxBatchSize"), "{explain}");
    let resources = c.kubectl(&["api-resources", "--api-group=inferpool.dev", "-o", "wide"])?;
    assert!(
        resources.contains("ipool") && resources.contains("inferpool"),
        "{resources}"
    );
    Ok(())
}

#[tokio::test]
async fn a_pool_is_created_defaulted_and_listed_with_its_columns() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let ns = c.namespace("pool")?;
    let pools: Api<InferencePool> = Api::namespaced(c.client().await?, ns.name());
    let pool = InferencePool::new("demo", InferencePoolSpec::with_model(ModelSpec::default()));
    // Send only `model`: the API server must fill in every default from the schema.
    let minimal: InferencePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "inferpool.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": "demo"}, "spec": {"model": {}},
    }))?;
    let created = pools.create(&PostParams::default(), &minimal).await?;
    assert_eq!(created.spec, pool.spec);

    let table = c.kubectl(&["get", "ipool", "-n", ns.name()])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "MODEL", "REPLICAS", "READY", "STRATEGY", "AGE"]
    );
    assert!(
        table.contains("demo") && table.contains("bundled") && table.contains("least_load"),
        "{table}"
    );
    Ok(())
}

#[test]
fn an_invalid_pool_is_rejected_with_the_cel_message() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let ns = c.namespace("invalid")?;
    let bad = "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: bad}\n\
               spec: {model: {}, autoscaling: {minReplicas: 5, maxReplicas: 2}}\n";
    let err = c
        .kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], bad)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"
        ),
        "{msg}"
    );
    let bad_enum = "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {name: bad2}\n\
                    spec: {model: {}, routing: {strategy: fastest}}\n";
    let err = c
        .kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], bad_enum)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("Unsupported value: \"fastest\""),
        "{err:#}"
    );
    Ok(())
}

/// `kubectl apply --dry-run=server` of `path` (a file or a folder) in `ns`: what it printed.
fn dry_run(
    c: &inferpool_e2e::cluster::Cluster,
    ns: &str,
    path: &std::path::Path,
) -> anyhow::Result<String> {
    let path = path.to_str().unwrap_or_default();
    c.kubectl(&["apply", "--dry-run=server", "-n", ns, "-f", path])
}

#[test]
fn the_examples_are_accepted_by_the_api_server() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let ns = c.namespace("examples")?;
    let out = dry_run(c, ns.name(), &repo_root().join("examples"))?;
    assert_eq!(out.lines().count(), 4, "{out}");
    Ok(())
}

#[test]
fn the_keda_example_is_accepted_by_the_api_server() -> anyhow::Result<()> {
    install_crd()?;
    install_keda_crd()?;
    let c = cluster()?;
    let ns = c.namespace("keda-example")?;
    let file = repo_root().join("examples/keda/scaled-pool.yaml");
    let out = dry_run(c, ns.name(), &file)?;
    assert!(
        out.contains("inferencepool.inferpool.dev/smollm2-keda"),
        "{out}"
    );
    assert!(out.contains("scaledobject.keda.sh/smollm2-keda"), "{out}");
    Ok(())
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  replicas: 2
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers:
      - name: main
        image: registry.invalid/never-pulled:1
        resources: {limits: {nvidia.com/gpu: "1"}}
"#;

#[tokio::test]
async fn a_deployment_gets_running_pods_on_fake_gpu_nodes() -> anyhow::Result<()> {
    let c = cluster()?;
    let ns = c.namespace("deploy")?;
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], DEPLOYMENT)?;
    let pods: Api<Pod> = Api::namespaced(c.client().await?, ns.name());
    let params = ListParams::default().labels("app=plain");
    let running = wait_until(Duration::from_secs(60), || async {
        let list = pods.list(&params).await.ok()?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await?;
    for pod in running {
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        assert!(node.starts_with("fake-gpu-"), "scheduled on {node}");
    }
    Ok(())
}

#[test]
fn kubectl_and_helm_see_the_real_server_version() -> anyhow::Result<()> {
    let c = cluster()?;
    let version: serde_json::Value = serde_json::from_str(&c.kubectl(&["version", "-o", "json"])?)?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(server.starts_with("v1.37."), "server version {server}");

    let chart = tempdir("helm-version")?;
    std::fs::create_dir_all(chart.join("templates"))?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: probe\nversion: 0.1.0\n",
    )?;
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {kube: \"{{ .Capabilities.KubeVersion.Version }}\"}\n",
    )?;
    let ns = c.namespace("helm")?;
    let out = c
        .tool("helm")
        .args([
            "install",
            "probe",
            chart.to_str().unwrap_or_default(),
            "-n",
            ns.name(),
            "--dry-run=server",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("kube: \"{server}\"")), "{text}");
    let helm = c.tool("helm").arg("version").output()?;
    assert!(
        String::from_utf8_lossy(&helm.stdout).contains("v3."),
        "{helm:?}"
    );
    std::fs::remove_dir_all(chart)?;
    Ok(())
}

fn tempdir(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("inferpool-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn kubectl_accepts_the_generated_crd() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let yaml = inferpool_operator::crd::crd_yaml()?;
    let out = c.kubectl_stdin(&["apply", "--dry-run=client", "-f", "-"], &yaml)?;
    assert!(out.contains("inferencepools.inferpool.dev"), "{out}");
    Ok(())
}
