//! The Helm chart against the real test control plane: lint and render with every values
//! file, server-side validation, install of both Deployments, a gateway and a controller
//! each running with exactly the chart's RBAC for its own ServiceAccount (the gateway
//! reaching a real agent), upgrade, uninstall; and the images it names match the
//! Dockerfiles.

use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::cluster::cluster;
use inferpool_e2e::controller::install_keda_crd;
use inferpool_e2e::http::post_json;
use inferpool_e2e::netns::NetNs;
use inferpool_e2e::operator::{GatewayProcess, OperatorProcess};
use inferpool_e2e::parts::{operator_binary, repo_root};
use inferpool_e2e::pools::until_ready;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use inferpool_operator::controller::names;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

fn chart() -> String {
    repo_root()
        .join("charts/inferpool")
        .to_string_lossy()
        .into_owned()
}

fn values_files() -> Vec<String> {
    let dir = repo_root().join("charts/inferpool/ci");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    files
}

#[test]
fn the_chart_lints_and_renders_with_every_values_file() -> anyhow::Result<()> {
    let c = cluster()?;
    c.helm(&["lint", "--strict", &chart()])?;
    for values in values_files() {
        c.helm(&["lint", "--strict", &chart(), "-f", &values])?;
        let out = c.helm(&[
            "template",
            "x",
            &chart(),
            "-f",
            &values,
            "--kube-version",
            "1.37.0",
        ])?;
        assert!(out.contains("kind: Deployment"), "{values}");
        binaries_take_the_charts_args(&out)?;
    }
    let full_values = format!(
        "{}/charts/inferpool/ci/full-values.yaml",
        repo_root().display()
    );
    let full = c.helm(&[
        "template",
        "x",
        &chart(),
        "-f",
        &full_values,
        "--kube-version",
        "1.37.0",
    ])?;
    assert!(full.contains("kind: ServiceMonitor") && full.contains("grafana_dashboard"));
    monitors_scrape_what_exists(&full)?;
    binaries_take_the_charts_args(&full)?;
    let bad = c
        .tool("helm")
        .args([
            "template",
            "x",
            &chart(),
            "--set",
            "replicaCount=0",
            "--kube-version",
            "1.37.0",
        ])
        .output()?;
    assert!(
        !bad.status.success(),
        "values.schema.json must refuse replicaCount=0"
    );
    Ok(())
}

/// Every container of the chart's Deployments starts with flags its binary accepts: the
/// args, then `--help`, parse (clap refuses an unknown flag or a bad value before it
/// reaches `--help`).
fn binaries_take_the_charts_args(rendered: &str) -> anyhow::Result<()> {
    let mut checked = 0;
    for deployment in documents(rendered, "Deployment")? {
        let containers = deployment["spec"]["template"]["spec"]["containers"].as_array();
        for container in containers.into_iter().flatten() {
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let out = std::process::Command::new(operator_binary()?)
                .args(&args)
                .arg("--help")
                .output()?;
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "the controller and the gateway");
    Ok(())
}

/// The rendered documents of `kind`.
fn documents(rendered: &str, kind: &str) -> anyhow::Result<Vec<Value>> {
    let header = format!("kind: {kind}");
    let mut found = Vec::new();
    for doc in rendered.split("\n---") {
        if doc.lines().any(|l| l == header) {
            found.push(serde_saphyr::from_str(doc)?);
        }
    }
    Ok(found)
}

/// The ServiceMonitor's endpoints are ports of the chart's Services; the PodMonitor selects
/// the agent pods the controller makes, scrapes their HTTP port, and labels their series
/// with the pool's name, as the gateway labels its own.
fn monitors_scrape_what_exists(rendered: &str) -> anyhow::Result<()> {
    let service_ports: Vec<Value> = documents(rendered, "Service")?
        .iter()
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p["name"].clone())
        .collect();
    let [service_monitor] = &documents(rendered, "ServiceMonitor")?[..] else {
        anyhow::bail!("one ServiceMonitor expected");
    };
    let endpoints = service_monitor["spec"]["endpoints"].as_array().cloned();
    let endpoints = endpoints.unwrap_or_default();
    assert_eq!(endpoints.len(), 2, "controller and gateway metrics");
    for e in endpoints {
        assert!(
            service_ports.contains(&e["port"]),
            "{e}: no such Service port"
        );
    }
    let [pod_monitor] = &documents(rendered, "PodMonitor")?[..] else {
        anyhow::bail!("one PodMonitor expected");
    };
    let pool: InferencePool = serde_saphyr::from_str(&std::fs::read_to_string(
        repo_root().join("examples/minimal-pool.yaml"),
    )?)?;
    let agent_labels = names::selector_labels(&pool);
    let selector = pod_monitor["spec"]["selector"]["matchLabels"].as_object();
    for (key, value) in selector.into_iter().flatten() {
        assert_eq!(
            agent_labels.get(key).map(String::as_str),
            value.as_str(),
            "{key}"
        );
    }
    let endpoint = &pod_monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], names::HTTP_PORT_NAME);
    let pool_label = names::POOL_LABEL.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let relabel = &endpoint["relabelings"][0];
    assert_eq!(
        relabel["sourceLabels"][0],
        format!("__meta_kubernetes_pod_label_{pool_label}")
    );
    assert_eq!(relabel["targetLabel"], "pool");
    Ok(())
}

#[test]
fn rendered_manifests_are_accepted_by_the_api_server() -> anyhow::Result<()> {
    let c = cluster()?;
    let ns = c.namespace("render")?;
    // KEDA's ScaledObjects (keda-values) are checked against KEDA's own CRD.
    install_keda_crd()?;
    // The full values add a ServiceMonitor, whose CRD (prometheus-operator) is not here.
    for values in values_files()
        .iter()
        .filter(|v| !v.ends_with("full-values.yaml"))
    {
        // --validate renders with the cluster's real version and API groups.
        let out = c.helm(&[
            "template",
            "x",
            &chart(),
            "-n",
            ns.name(),
            "-f",
            values,
            "--validate",
        ])?;
        let applied = c.kubectl_stdin(
            &["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
            &out,
        )?;
        if values.ends_with("keda-values.yaml") {
            for pool in ["smollm2", "smollm2-big"] {
                let object = format!("scaledobject.keda.sh/{pool}");
                assert!(applied.contains(&object), "{applied}");
            }
        }
    }
    let out = c.helm(&["template", "x", &chart(), "-n", ns.name(), "--validate"])?;
    let applied = c.kubectl_stdin(
        &["apply", "--dry-run=server", "-n", ns.name(), "-f", "-"],
        &out,
    )?;
    assert!(applied.contains("deployment.apps/x-inferpool"), "{applied}");
    Ok(())
}

#[tokio::test]
async fn install_reconcile_upgrade_and_uninstall() -> anyhow::Result<()> {
    let c = cluster()?;
    let ns = c.namespace("helm-install")?;
    let pools_ns = c.namespace("helm-pools")?;
    let release = format!("ip{}", std::process::id());
    let name = format!("{release}-inferpool");
    c.helm(&[
        "install",
        &release,
        &chart(),
        "-n",
        ns.name(),
        "--wait",
        "--timeout",
        "90s",
    ])?;
    let client = c.client().await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    for deployment in [name.clone(), format!("{name}-gateway")] {
        let d = deployments.get(&deployment).await?;
        assert_eq!(
            d.status.and_then(|s| s.ready_replicas),
            Some(2),
            "{deployment}"
        );
    }
    c.kubectl(&["get", "crd", "inferencepools.inferpool.dev"])?;
    gateway_with_the_charts_rbac_reaches_a_pool(c, ns.name(), &format!("{name}-gateway")).await?;

    // An operator with exactly the chart's RBAC reconciles the minimal example.
    let user = format!("system:serviceaccount:{}:{name}", ns.name());
    let kubeconfig = c.impersonating(&user, &format!("{release}.kubeconfig"))?;
    let op = OperatorProcess::spawn(&kubeconfig, &release, ns.name())?;
    let example = repo_root().join("examples/minimal-pool.yaml");
    c.kubectl(&[
        "apply",
        "-n",
        pools_ns.name(),
        "-f",
        &example.to_string_lossy(),
    ])?;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), pools_ns.name());
    let limit = Duration::from_secs(90);
    let pool = until_ready(&pools, "minimal", limit).await?;
    assert_eq!(pool.status.map(|s| s.ready_replicas), Some(1));
    c.kubectl(&[
        "scale",
        "-n",
        pools_ns.name(),
        "ipool/minimal",
        "--replicas=3",
    ])?;
    let pool = until_ready(&pools, "minimal", limit).await?;
    assert_eq!(pool.status.map(|s| s.ready_replicas), Some(3));
    let table = c.kubectl(&["get", "ipool", "-n", pools_ns.name()])?;
    assert!(
        table.starts_with("NAME") && table.contains("STRATEGY") && table.contains("minimal"),
        "{table}"
    );
    let explain = c.kubectl(&["explain", "inferencepool.spec.batching"])?;
    assert!(explain.contains("maxWaitMilliseconds"), "{explain}");
    assert!(
        !op.refused_as(&user),
        "the chart's RBAC refused the operator:\n{}",
        op.log_text()
    );
    drop(op);

    // Changed values roll the operator.
    c.helm(&[
        "upgrade",
        &release,
        &chart(),
        "-n",
        ns.name(),
        "--set",
        "logLevel=debug",
        "--wait",
        "--timeout",
        "90s",
    ])?;
    for app in ["inferpool-operator", "inferpool-gateway"] {
        let selector = format!("app.kubernetes.io/instance={release},app.kubernetes.io/name={app}");
        let sets = Api::<ReplicaSet>::namespaced(client.clone(), ns.name())
            .list(&ListParams::default().labels(&selector))
            .await?;
        assert_eq!(
            sets.items.len(),
            2,
            "an upgrade with new values makes a new ReplicaSet of {app}"
        );
    }

    // Uninstall leaves no operator object behind; the CRD stays, as Helm does.
    c.helm(&["uninstall", &release, "-n", ns.name(), "--wait"])?;
    let selector = format!("app.kubernetes.io/instance={release}");
    let left = c.kubectl(&[
        "get",
        "deploy,sa,svc,role,rolebinding,pdb,networkpolicy,configmap",
        "-n",
        ns.name(),
        "-l",
        &selector,
        "-o",
        "name",
    ])?;
    assert!(left.trim().is_empty(), "left behind: {left}");
    let cluster_left = c.kubectl(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        &selector,
        "-o",
        "name",
    ])?;
    assert!(
        cluster_left.trim().is_empty(),
        "left behind: {cluster_left}"
    );
    c.kubectl(&["get", "crd", "inferencepools.inferpool.dev"])?;
    std::fs::remove_file(kubeconfig)?;
    Ok(())
}

/// A gateway process acting as the chart's gateway ServiceAccount serves a pool whose
/// agent Service's slice points at a real agent (in a network namespace of this test: no
/// controller runs yet, so no fake agents exist that it could try to dial).
async fn gateway_with_the_charts_rbac_reaches_a_pool(
    c: &'static inferpool_e2e::cluster::Cluster,
    release_ns: &str,
    account: &str,
) -> anyhow::Result<()> {
    let netns = NetNs::create()?;
    let agent = AgentProcess::start_in(&netns, serde_json::json!({})).await?;
    let ns = c.namespace("helm-gateway")?;
    let pool = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata: {{name: gpool}}\n\
         spec: {{model: {{servedName: {MODEL}}}}}\n"
    );
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], &pool)?;
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "gpool-agent-test", "labels": {
            "kubernetes.io/service-name": "gpool-agent", "app.kubernetes.io/name": "inferpool-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": agent.grpc.port()}, {"name": "http", "port": agent.http.port()}],
        "endpoints": [{"addresses": [netns.inner.to_string()], "conditions": {"ready": true}}],
    });
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], &slice.to_string())?;
    let user = format!("system:serviceaccount:{release_ns}:{account}");
    let kubeconfig = c.impersonating(
        &user,
        &format!("{account}-{}.kubeconfig", std::process::id()),
    )?;
    let gateway = GatewayProcess::spawn(&kubeconfig, account)?;
    let body = serde_json::json!({"model": MODEL, "max_tokens": 3,
        "messages": [{"role": "user", "content": "hi"}]});
    let answered = wait_until(Duration::from_secs(60), || async {
        let ok =
            post_json(gateway.addr, "/v1/chat/completions", &body).is_ok_and(|r| r.status == 200);
        (ok && gateway.ready()).then_some(())
    })
    .await;
    let log = gateway.log_text();
    drop(gateway);
    std::fs::remove_file(kubeconfig)?;
    answered.map_err(|e| anyhow::anyhow!("{e}; gateway log:\n{log}"))?;
    assert!(
        !log.contains("forbidden"),
        "the chart's RBAC refused the gateway:\n{log}"
    );
    c.kubectl(&["delete", "inferencepool", "gpool", "-n", ns.name()])?;
    Ok(())
}

#[test]
fn chart_images_match_the_dockerfiles_and_operator_defaults() -> anyhow::Result<()> {
    let root = repo_root();
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        root.join("charts/inferpool/values.yaml"),
    )?)?;
    let chart: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        root.join("charts/inferpool/Chart.yaml"),
    )?)?;
    let version = chart["appVersion"].as_str().unwrap_or_default();
    let mut built = Vec::new();
    for file in ["operator", "agent", "agent-cuda"] {
        let text = std::fs::read_to_string(root.join(format!("docker/{file}.Dockerfile")))?;
        let label = text
            .split("dev.inferpool.image=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        built.push(label.unwrap_or_default().to_owned());
        assert!(text.contains("USER 65532"), "{file} must run as non-root");
    }
    let help = std::process::Command::new(operator_binary()?)
        .args(["run", "--help"])
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for (key, dockerfile) in [("operator", 0), ("agent", 1), ("agentCuda", 2)] {
        let repo = values["image"][key]["repository"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            repo, built[dockerfile],
            "values image.{key} vs its Dockerfile"
        );
        if key != "operator" {
            assert!(
                help.contains(&format!("{repo}:{version}")),
                "operator default for {key} is not {repo}:{version}"
            );
        }
    }
    Ok(())
}
