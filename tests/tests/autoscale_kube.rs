//! The built-in autoscaler and scale from zero against the real test control plane: the
//! controller and a gateway in this process, an InferencePool with `autoscaling`, and the
//! pool's EndpointSlice pointing at a real agent in a network namespace this test creates
//! (the API refuses loopback addresses). The test plays the kubelet: once the Deployment
//! asks for an agent, it publishes the agent's slice.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::cluster::{Cluster, cluster};
use inferpool_e2e::controller::{install_crd, shared_controller};
use inferpool_e2e::http::{Reply, header, post_json};
use inferpool_e2e::netns::NetNs;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::gateway::discovery::Discovery as _;
use inferpool_operator::gateway::dispatch::gateway::Gateway;
use inferpool_operator::gateway::{discovery, runtime};
use inferpool_operator::gateway_demand::publish_demand;
use inferpool_protocol::listen::WorkerSockets;
use serde_json::json;

const BATCH: u32 = 2;

/// The agent Service's slice of pool `pool`: `agent`'s ports at `ip`.
fn slice(ns: &str, pool: &str, ip: &str, agent: &AgentProcess) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{pool}-agent-test"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": format!("{pool}-agent"),
                "app.kubernetes.io/name": "inferpool-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": agent.grpc.port(), "protocol": "TCP"},
            {"name": "http", "port": agent.http.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": format!("{pool}-agent-0"), "namespace": ns}}],
    })
    .to_string()
}

fn pools(ns: &str) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: apool\n  \
         namespace: {ns}\nspec:\n  replicas: 0\n  model:\n    servedName: {MODEL}\n  \
         batching:\n    maxBatchSize: {BATCH}\n  autoscaling:\n    minReplicas: 0\n    \
         maxReplicas: 3\n    targetLoad: 1.0\n    scaleDownDelaySeconds: 2\n\
         ---\napiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: zpool\n  \
         namespace: {ns}\nspec:\n  replicas: 0\n  model:\n    servedName: zero-model\n  \
         routing:\n    requestTimeoutSeconds: 2\n"
    )
}

fn replicas(cluster: &Cluster, ns: &str) -> Option<i32> {
    let args = [
        "get",
        "deploy",
        "apool-agent",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.replicas}",
    ];
    cluster.kubectl(&args).ok()?.trim().parse().ok()
}

fn chat(addr: SocketAddr, model: &str, max_tokens: u32) -> anyhow::Result<Reply> {
    let body = json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}]});
    post_json(addr, "/v1/chat/completions", &body)
}

/// A gateway as `inferpool-operator gateway` runs it: discovery, demand, the server.
async fn gateway(cluster: &Cluster) -> anyhow::Result<SocketAddr> {
    let gateway = Gateway::new();
    let client = cluster.client().await?;
    let discovery = discovery::KubernetesDiscovery {
        client: client.clone(),
        // The test runs one real agent whatever the Deployment asks: the burst waits for it.
        queue_wait: Duration::from_secs(120),
        synced: Default::default(),
    };
    tokio::spawn(discovery.run(gateway.clone()));
    tokio::spawn(publish_demand(
        client,
        gateway.clone(),
        "test-gateway".into(),
    ));
    let bound = WorkerSockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2)?;
    let addr = bound.addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = runtime::start_with(bound, &gateway, &stopped, Default::default())?;
    // Serves for the rest of the test process.
    std::mem::forget((stop, serving));
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_scales_from_zero_up_with_load_and_down_one_step_after_the_delay()
-> anyhow::Result<()> {
    let netns = NetNs::create()?;
    let agent =
        AgentProcess::start_in(&netns, json!({"batching": {"maxBatchSize": BATCH}})).await?;
    let cluster = cluster()?;
    install_crd()?;
    shared_controller()?;
    let ns = cluster.namespace("autoscale")?;
    let ns = ns.name().to_owned();
    cluster.kubectl_stdin(&["apply", "-f", "-"], &pools(&ns))?;
    let addr = gateway(cluster).await?;

    // A known model at zero, past its deadline: retryable, never 404.
    let zero = wait_until(Duration::from_secs(60), || async {
        chat(addr, "zero-model", 1).ok().filter(|r| r.status != 404)
    })
    .await?;
    assert_eq!(zero.status, 503, "{}", zero.body);
    assert_eq!(zero.json()?["error"]["type"], "pool_scaling");
    assert_eq!(
        header(&zero.head, "retry-after"),
        Some("10"),
        "{}",
        zero.head
    );

    // At zero, the first request is held; the Deployment is asked for an agent.
    let first_request = Instant::now();
    let held = std::thread::spawn(move || chat(addr, MODEL, 4));
    wait_until(Duration::from_secs(60), || async {
        (replicas(cluster, &ns) == Some(1)).then_some(())
    })
    .await?;
    let decided = first_request.elapsed();
    cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &slice(&ns, "apool", &netns.inner.to_string(), &agent),
    )?;
    let answered = held.join().map_err(|_| anyhow::anyhow!("panicked"))??;
    assert_eq!(answered.status, 200, "{}", answered.body);
    println!(
        "scale from zero: decision {decided:?}, first answer {:?} after the first request",
        first_request.elapsed()
    );

    // Load: 6 requests on an agent of 2 slots at targetLoad 1 need 3 agents (the maximum).
    let load = Instant::now();
    let burst: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || chat(addr, MODEL, 16)))
        .collect();
    wait_until(Duration::from_secs(30), || async {
        (replicas(cluster, &ns) == Some(3)).then_some(())
    })
    .await?;
    println!("scale-up under a load step: 1 -> 3 in {:?}", load.elapsed());
    let at_three = Instant::now();
    for request in burst {
        let reply = request.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let idle = Instant::now();

    // Load below target (it falls as the burst's requests end): one step down, after the
    // delay, not straight to the minimum.
    let first_change = wait_until(Duration::from_secs(60), || async {
        replicas(cluster, &ns).filter(|r| *r != 3)
    })
    .await?;
    assert_eq!(first_change, 2, "one agent at a time");
    assert!(
        at_three.elapsed() >= Duration::from_secs(2),
        "not before the delay"
    );
    println!("scale-down: 3 -> 2 after {:?} idle", idle.elapsed());

    let condition = cluster.kubectl(&[
        "get",
        "inferencepool",
        "apool",
        "-n",
        &ns,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"ScalingActive\")].status}",
    ])?;
    assert_eq!(condition.trim(), "True");
    let events = cluster.kubectl(&[
        "get",
        "events",
        "-n",
        &ns,
        "--field-selector",
        "reason=ScaledUp",
        "-o",
        "name",
    ])?;
    assert!(!events.trim().is_empty(), "a ScaledUp event");
    Ok(())
}

/// A pool with `autoscaling` and an autoscaling/v2 HorizontalPodAutoscaler on it, and the
/// HPA alone; `kubectl` rather than typed objects, as a user would write them.
fn hpa_pool(ns: &str) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: hpool\n  \
         namespace: {ns}\nspec:\n  replicas: 2\n  model:\n    servedName: hpa-model\n  \
         autoscaling:\n    minReplicas: 0\n    maxReplicas: 3\n    scaleDownDelaySeconds: 1\n"
    )
}

fn hpa(ns: &str) -> String {
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: hpool\n  \
         namespace: {ns}\nspec:\n  scaleTargetRef:\n    apiVersion: inferpool.dev/v1alpha1\n    \
         kind: InferencePool\n    name: hpool\n  minReplicas: 2\n  maxReplicas: 4\n"
    )
}

/// `(status, reason)` of the pool's `ScalingActive` condition.
fn scaling_active(cluster: &Cluster, ns: &str) -> Option<(String, String)> {
    let path = "jsonpath={.status.conditions[?(@.type==\"ScalingActive\")]['status','reason']}";
    let args = ["get", "inferencepool", "hpool", "-n", ns, "-o", path];
    let out = cluster.kubectl(&args).ok()?;
    let (status, reason) = out.trim().split_once(' ')?;
    Some((status.to_owned(), reason.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_an_hpa_targets_is_left_to_it_and_taken_back_when_it_goes() -> anyhow::Result<()> {
    let cluster = cluster()?;
    install_crd()?;
    shared_controller()?;
    let ns = cluster.namespace("autoscale-hpa")?;
    let ns = ns.name().to_owned();
    cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!("{}---\n{}", hpa(&ns), hpa_pool(&ns)),
    )?;

    // Idle with no agent and minReplicas 0, the built-in autoscaler would take the pool down;
    // with the HPA there it says so and leaves the replicas alone.
    let aside = wait_until(Duration::from_secs(30), || async {
        scaling_active(cluster, &ns).filter(|(_, reason)| reason == "HorizontalPodAutoscaler")
    })
    .await?;
    assert_eq!(aside.0, "False");
    let held = wait_until(Duration::from_secs(30), || async {
        let args = [
            "get",
            "deploy",
            "hpool-agent",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.replicas}",
        ];
        cluster.kubectl(&args).ok().filter(|r| !r.trim().is_empty())
    })
    .await?;
    assert_eq!(
        held.trim(),
        "2",
        "the built-in autoscaler moved a pool the HPA owns"
    );

    cluster.kubectl(&["delete", "hpa", "hpool", "-n", &ns])?;
    let back = wait_until(Duration::from_secs(30), || async {
        scaling_active(cluster, &ns).filter(|(_, reason)| reason != "HorizontalPodAutoscaler")
    })
    .await?;
    println!("without the HPA: ScalingActive {back:?}");
    Ok(())
}
