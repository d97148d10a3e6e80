//! Kubernetes discovery for the gateway against the real test control plane: an
//! InferencePool and an EndpointSlice for its agent Service that points at a real agent,
//! running in a network namespace this test creates (the API refuses loopback addresses).

use std::net::SocketAddr;
use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::cluster::cluster;
use inferpool_e2e::controller::install_crd;
use inferpool_e2e::dashboard;
use inferpool_e2e::http::{get, header, metric, post_json};
use inferpool_e2e::netns::NetNs;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::gateway::discovery::Discovery as _;
use inferpool_operator::gateway::dispatch::gateway::Gateway;
use inferpool_operator::gateway::{discovery, runtime};
use inferpool_protocol::listen::WorkerSockets;
use serde_json::json;

/// The agent Service's slice: `agent`'s ports at `ip`.
fn slice(ns: &str, ip: &str, agent: &AgentProcess, ready: bool) -> String {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kpool-agent-test", "namespace": ns,
            // The EndpointSlice controller copies the Service's labels, the agent label
            // among them: discovery watches only slices that carry it.
            "labels": {"kubernetes.io/service-name": "kpool-agent",
                "app.kubernetes.io/name": "inferpool-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": agent.grpc.port(), "protocol": "TCP"},
            {"name": "http", "port": agent.http.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
            "targetRef": {"kind": "Pod", "name": "kpool-agent-0", "namespace": ns}}],
    })
    .to_string()
}

// The gateway runs on this test's runtime while the test's HTTP client blocks: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_a_pools_endpoint_slices_to_a_real_agent() -> anyhow::Result<()> {
    let netns = NetNs::create()?;
    let agent = AgentProcess::start_in(&netns, json!({})).await?;
    let cluster = cluster()?;
    install_crd()?;
    let ns = cluster.namespace("gwkube")?;
    let pool = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: kpool\n  \
         namespace: {}\nspec:\n  model:\n    servedName: {MODEL}\n  routing:\n    \
         requestTimeoutSeconds: 2\n",
        ns.name()
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &pool)?;
    let ip = netns.inner.to_string();
    cluster.kubectl_stdin(&["apply", "-f", "-"], &slice(ns.name(), &ip, &agent, true))?;

    let gateway = Gateway::new();
    let client = cluster.client().await?;
    let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let discovery = discovery::KubernetesDiscovery {
        client,
        queue_wait: Duration::from_secs(1),
        synced: synced.clone(),
    };
    let discovering = tokio::spawn(discovery.run(gateway.clone()));
    // Readiness of a gateway replica: both kinds listed.
    wait_until(Duration::from_secs(60), || async {
        synced
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(())
    })
    .await?;
    // Served as `inferpool-operator run` serves it: by the gateway's worker threads.
    let bound = WorkerSockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2)?;
    let addr = bound.addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = runtime::start_with(bound, &gateway, &stopped, Default::default())?;

    let body =
        json!({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    let status = || {
        post_json(addr, "/v1/chat/completions", &body)
            .map(|r| r.status)
            .unwrap_or(0)
    };
    wait_until(Duration::from_secs(60), || async {
        (status() == 200).then_some(())
    })
    .await?;

    dashboard_queries_what_is_exposed(addr, &agent)?;
    // Whole answers came from the agent's own HTTP API (found at the slice's `http` port),
    // not over gRPC.
    let agent_text = agent.metrics()?;
    let answered_on = |endpoint: &str| {
        let key =
            format!("inferpool_agent_requests_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}");
        metric(&agent_text, &key).unwrap_or(0.0)
    };
    assert!(answered_on("chat") >= 1.0, "{agent_text}");
    assert_eq!(answered_on("grpc_generate"), 0.0, "{agent_text}");

    // The endpoint turns not-ready: the gateway stops sending to it. A pool with no ready
    // agent holds the request for one (scale from zero) until the pool's request timeout,
    // 2 s here, then answers a retryable 503 pool_scaling, never 404 for a known model.
    cluster.kubectl_stdin(&["apply", "-f", "-"], &slice(ns.name(), &ip, &agent, false))?;
    wait_until(Duration::from_secs(30), || async {
        (status() == 503).then_some(())
    })
    .await?;
    let refused = post_json(addr, "/v1/chat/completions", &body)?;
    assert!(
        header(&refused.head, "retry-after").is_some(),
        "{}",
        refused.head
    );
    assert_eq!(refused.json()?["error"]["type"], "pool_scaling");

    // The pool goes away: so does its model.
    cluster.kubectl(&["delete", "inferencepool", "kpool", "-n", ns.name()])?;
    wait_until(Duration::from_secs(30), || async {
        (status() == 404).then_some(())
    })
    .await?;
    discovering.abort();
    let _ = stop.send(true);
    serving.join().await?;
    Ok(())
}

/// Every metric the chart's dashboard queries is exposed by the gateway or the agent, and
/// the gateway labels a pool's series with the pool's name (as the chart's PodMonitor
/// labels its agents' series).
fn dashboard_queries_what_is_exposed(
    gateway: SocketAddr,
    agent: &AgentProcess,
) -> anyhow::Result<()> {
    let (status, gateway_text) = get(gateway, "/metrics")?;
    anyhow::ensure!(status == 200, "the gateway's /metrics answered {status}");
    let ok = "inferpool_gateway_requests_total{pool=\"kpool\",outcome=\"ok\"}";
    assert!(
        metric(&gateway_text, ok).unwrap_or(0.0) >= 1.0,
        "{gateway_text}"
    );
    let agent_text = agent.metrics()?;
    let mut exposed = dashboard::exposed(&gateway_text);
    exposed.extend(dashboard::exposed(&agent_text));
    exposed.extend(dashboard::agent_gpu_gauges());
    let missing: Vec<String> = dashboard::metric_names()?
        .into_iter()
        .filter(|name| !exposed.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exposes: {missing:?}"
    );
    Ok(())
}
