//! Controller benchmark: time from creating N InferencePools to all Ready (p50/p99 per
//! pool), operator CPU seconds and peak RSS meanwhile, and idle RSS with N pools. The
//! reference, in the same run and cluster: the same N agent Deployments created directly,
//! timed to Available, i.e. what Kubernetes itself (controller-manager, scheduler, kwok)
//! costs with no operator in between.
//!
//! Run with `bench/controller` (it builds, starts a control plane and cleans up).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _, stream};
use inferpool_bench::{mib, proc_stats, quantile};
use inferpool_operator::api::{InferencePool, InferencePoolSpec, ModelSpec};
use inferpool_operator::controller::config::resolve_source;
use inferpool_operator::controller::deployment::{
    AgentImages, DefaultResources, DeploymentInputs, deployment,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};

#[derive(Debug, Parser)]
struct Args {
    /// Kubeconfig of the (test) cluster.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The inferpool-operator binary.
    #[arg(long)]
    operator: PathBuf,
    /// Pools (and reference Deployments) to create.
    #[arg(long, default_value_t = 200)]
    pools: usize,
    /// Give up after this many seconds per phase.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

const CONCURRENCY: usize = 16;
const IDENTITY: &str = "bench-operator";

/// Waits until the operator holds its Lease, so that start-up is not counted.
async fn wait_for_leader(client: &kube::Client, limit: Duration) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < deadline {
        tick.tick().await;
        let lease = leases.get_opt("inferpool-operator").await?;
        let holder = lease.and_then(|l| l.spec?.holder_identity);
        if holder.as_deref() == Some(IDENTITY) {
            return Ok(());
        }
    }
    anyhow::bail!("the operator did not take its lease")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let limit = Duration::from_secs(args.timeout_seconds);

    let reference = reference_phase(&client, args.pools, limit).await?;
    report("reference: Deployments created directly", &reference);

    let mut operator = spawn_operator(&args)?;
    let pid = operator.id();
    wait_for_leader(&client, limit).await?;
    let before = proc_stats(pid)?;
    let pools = pool_phase(&client, args.pools, limit).await;
    let after = proc_stats(pid)?;
    let idle = idle_rss(pid).await?;
    let _ = operator.kill();
    let _ = operator.wait();
    let pools = pools?;
    report("inferpool: InferencePools through the operator", &pools);
    println!(
        "operator: {:.2} CPU s while pools became Ready, peak RSS {:.1} MiB, idle RSS with {} pools {:.1} MiB",
        after.cpu_seconds - before.cpu_seconds,
        mib(after.peak_rss_bytes),
        args.pools,
        mib(idle)
    );
    Ok(())
}

fn report(label: &str, latencies: &[Duration]) {
    let p = |q| quantile(latencies, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "{label}: n={} p50={:.0} ms p99={:.0} ms max={:.0} ms",
        latencies.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

fn spawn_operator(args: &Args) -> anyhow::Result<Child> {
    Command::new(&args.operator)
        .args([
            "run",
            "--health-addr",
            "127.0.0.1:0",
            "--lease-namespace",
            "default",
            "--identity",
            IDENTITY,
        ])
        .args([
            "--agent-image",
            "registry.invalid/agent:cpu",
            "--agent-cuda-image",
            "registry.invalid/agent:cuda",
        ])
        .env("KUBECONFIG", &args.kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the operator")
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

fn bench_pool(name: &str) -> InferencePool {
    let mut pool = InferencePool::new(name, InferencePoolSpec::with_model(ModelSpec::default()));
    pool.metadata.namespace = None;
    pool
}

async fn reference_phase(
    client: &kube::Client,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let ns = "bench-reference";
    create_namespace(client, ns).await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let images = AgentImages {
        cpu: "registry.invalid/agent:cpu".into(),
        cuda: String::new(),
    };
    let source = resolve_source("bundled")?;
    let no_defaults = DefaultResources::default();
    let ready = watch_until_all(api.clone(), n, limit, |d: &Deployment| {
        let s = d.status.as_ref();
        s.and_then(|s| s.available_replicas) == d.spec.replicas
    });
    let created = create_all(n, |i| {
        let api = api.clone();
        let pool = bench_pool(&format!("ref-{i}"));
        let inputs = DeploymentInputs {
            images: &images,
            resources: &no_defaults,
            source: &source,
            config_checksum: "0",
            tls: None,
        };
        let d = deployment(&pool, &inputs);
        async move { api.create(&PostParams::default(), &d).await.map(drop) }
    });
    latencies(created, ready, |name| {
        name.trim_end_matches("-agent").to_owned()
    })
    .await
}

async fn pool_phase(
    client: &kube::Client,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let ns = "bench-pools";
    create_namespace(client, ns).await?;
    let api: Api<InferencePool> = Api::namespaced(client.clone(), ns);
    let ready = watch_until_all(api.clone(), n, limit, |p: &InferencePool| {
        let conditions = p
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let created = create_all(n, |i| {
        let api = api.clone();
        let pool = bench_pool(&format!("ref-{i}"));
        async move { api.create(&PostParams::default(), &pool).await.map(drop) }
    });
    latencies(created, ready, |name| name.to_owned()).await
}

/// Creates `n` objects, at most CONCURRENCY at a time; returns when each was created.
async fn create_all<F, Fut>(n: usize, make: F) -> anyhow::Result<HashMap<String, Instant>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    stream::iter(0..n)
        .map(|i| {
            let started = Instant::now();
            let fut = make(i);
            async move { fut.await.map(|()| (format!("ref-{i}"), started)) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
        .map_err(Into::into)
}

/// Watches `api` until `n` objects satisfy `ready`; returns when each first did.
async fn watch_until_all<K, F>(
    api: Api<K>,
    n: usize,
    limit: Duration,
    ready: F,
) -> anyhow::Result<HashMap<String, Instant>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&K) -> bool,
{
    let mut seen = HashMap::new();
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut objects = std::pin::pin!(events.applied_objects());
    let deadline = tokio::time::Instant::now() + limit;
    while seen.len() < n {
        let next = tokio::time::timeout_at(deadline, objects.next()).await;
        let obj = next
            .context("timed out waiting for readiness")?
            .context("watch ended")??;
        if ready(&obj) {
            let name = obj.meta().name.clone().unwrap_or_default();
            seen.entry(name).or_insert_with(Instant::now);
        }
    }
    Ok(seen)
}

async fn latencies(
    created: impl std::future::Future<Output = anyhow::Result<HashMap<String, Instant>>>,
    ready: impl std::future::Future<Output = anyhow::Result<HashMap<String, Instant>>>,
    key: impl Fn(&str) -> String,
) -> anyhow::Result<Vec<Duration>> {
    let (created, ready) = tokio::join!(created, ready);
    let (created, ready) = (created?, ready?);
    Ok(ready
        .iter()
        .filter_map(|(name, at)| {
            created
                .get(&key(name))
                .map(|c| at.saturating_duration_since(*c))
        })
        .collect())
}

/// RSS once the operator is idle: CPU use below 10 ms per second, three seconds running.
async fn idle_rss(pid: u32) -> anyhow::Result<u64> {
    let mut quiet = 0;
    let mut last = proc_stats(pid)?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..60 {
        tick.tick().await;
        let now = proc_stats(pid)?;
        quiet = if now.cpu_seconds - last.cpu_seconds < 0.01 {
            quiet + 1
        } else {
            0
        };
        last = now;
        if quiet >= 3 {
            break;
        }
    }
    Ok(last.rss_bytes)
}
