//! Faults of the controller against the real API server:
//! - the operator SIGKILLed in the middle of reconciling 50 pools: its successor (after the
//!   dead leader's lease expires) brings every pool to Ready at its generation, with
//!   exactly one of each child per pool, each owned by its pool, none rewritten into a
//!   second revision;
//! - the leader frozen (SIGSTOP) past its lease: the standby takes over, and the old
//!   leader, once it wakes, stands down and reconciles nothing more;
//! - kube-apiserver and then etcd SIGKILLed and restarted (a control plane of the test's
//!   own) while pools are created, scaled and deleted: the same operator process rides
//!   both out, and every change lands with its status caught up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use inferpool_e2e::cluster::{Cluster, OwnCluster, cluster};
use inferpool_e2e::controller::install_crd;
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::operator::OperatorProcess;
use inferpool_e2e::parts::repo_root;
use inferpool_e2e::pools::{pool_yaml, until_ready};
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt as _};

const POOLS: usize = 50;

/// Held by the tests that run operators against the shared control plane: an operator
/// reconciles every namespace, so another test's would do this one's work.
static SHARED_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn name(i: usize) -> String {
    format!("p{i:02}")
}

/// How many objects of kind `K` in `ns` each pool owns, by pool name (an object owned
/// by no pool, or by several, is an error).
async fn owned_by_pool<K>(
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, usize>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut owners = BTreeMap::new();
    for object in Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?
    {
        let pools: Vec<_> = object
            .owner_references()
            .iter()
            .filter(|o| o.kind == "InferencePool")
            .collect();
        // Objects of the namespace's own (kube-root-ca.crt, the kubernetes Service) are
        // no pool's children: only those carrying the pool label are.
        if pools.is_empty() && !object.labels().contains_key("inferpool.dev/pool") {
            continue;
        }
        let [pool] = pools.as_slice() else {
            anyhow::bail!("{} is owned by {} pools", object.name_any(), pools.len());
        };
        *owners.entry(pool.name.clone()).or_default() += 1;
    }
    Ok(owners)
}

/// Exactly one of `K` per pool in `pools`, and none of another pool.
async fn one_each<K>(
    client: &kube::Client,
    ns: &str,
    pools: &[String],
    what: &str,
) -> anyhow::Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let owners = owned_by_pool::<K>(client, ns).await?;
    let expected: BTreeMap<String, usize> = pools.iter().map(|p| (p.clone(), 1)).collect();
    assert_eq!(owners, expected, "{what} per pool");
    Ok(())
}

/// One Deployment, Service, ConfigMap and NetworkPolicy per pool in `pools`.
async fn one_child_each(client: &kube::Client, ns: &str, pools: &[String]) -> anyhow::Result<()> {
    one_each::<Deployment>(client, ns, pools, "Deployments").await?;
    one_each::<Service>(client, ns, pools, "Services").await?;
    one_each::<ConfigMap>(client, ns, pools, "ConfigMaps").await?;
    one_each::<NetworkPolicy>(client, ns, pools, "NetworkPolicies").await
}

#[tokio::test]
async fn an_operator_killed_mid_reconcile_of_50_pools_leaves_its_successor_no_duplicates()
-> anyhow::Result<()> {
    let _alone = SHARED_CLUSTER.lock().await;
    install_crd()?;
    let c = cluster()?;
    let lease_ns = c.namespace("faults-lease")?;
    let ns = c.namespace("faults")?;
    let client = c.client().await?;
    let mut first = OperatorProcess::spawn(c.kubeconfig(), "op-first", lease_ns.name())?;
    wait_until(Duration::from_secs(60), || async {
        first.leads().then_some(())
    })
    .await?;
    // Applied in the background: the operator is killed as soon as it has written its
    // first children, while the rest are still arriving.
    let names: Vec<String> = (0..POOLS).map(name).collect();
    let namespace = ns.name().to_owned();
    let applying = std::thread::spawn(move || {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        apply(c, &namespace, &names, 1)
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let count = || async {
        let listed = deployments.list(&ListParams::default()).await.ok()?;
        Some(listed.items.len())
    };
    // Killed once it has written its first children, with pools left to do.
    wait_until(Duration::from_secs(60), || async {
        count().await.filter(|n| *n > 0)
    })
    .await?;
    first.child.kill()?;
    let at_kill = count().await.unwrap_or(0);
    let applied = applying.join();
    applied.map_err(|_| anyhow::anyhow!("kubectl apply panicked"))??;
    eprintln!("operator killed with {at_kill} of {POOLS} Deployments written");
    assert!(
        at_kill < POOLS,
        "the operator finished before it was killed"
    );

    let second = OperatorProcess::spawn(c.kubeconfig(), "op-second", lease_ns.name())?;
    let started = Instant::now();
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns.name());
    for i in 0..POOLS {
        if let Err(e) = until_ready(&pools, &name(i), Duration::from_secs(180)).await {
            anyhow::bail!("{} never Ready: {e}\n{}", name(i), second.log_text());
        }
    }
    let recovered = started.elapsed();
    let names: Vec<String> = (0..POOLS).map(name).collect();
    one_child_each(&client, ns.name(), &names).await?;
    // The successor applied what the first one had written unchanged: no Deployment was
    // rewritten into a second pod template (a rollout for nothing).
    for d in deployments.list(&ListParams::default()).await? {
        assert_eq!(
            d.metadata.generation,
            Some(1),
            "{} was rewritten",
            d.name_any()
        );
    }
    inferpool_e2e::faults::row(
        &format!("operator SIGKILL mid-reconcile of {POOLS} pools"),
        "successor: every pool Ready, one of each child, none rewritten",
        &format!(
            "killed at {at_kill}/{POOLS} written; all Ready {recovered:?} after the successor started; 0 duplicates, 0 rewritten"
        ),
    );
    Ok(())
}

/// Applies pools `names` with `replicas` each to `ns`.
fn apply(c: &Cluster, ns: &str, names: &[&str], replicas: u32) -> anyhow::Result<()> {
    let spec = format!("{{model: {{}}, replicas: {replicas}}}");
    let docs: Vec<String> = names.iter().map(|n| pool_yaml(n, &spec)).collect();
    c.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], &docs.join("---\n"))
        .map(drop)
}

/// Waits until every pool of `names` is Ready at its generation.
async fn all_ready(
    pools: &Api<InferencePool>,
    names: &[&str],
    operator: &OperatorProcess,
) -> anyhow::Result<()> {
    for name in names {
        if let Err(e) = until_ready(pools, name, Duration::from_secs(120)).await {
            anyhow::bail!("{name} never Ready: {e}\n{}", operator.log_text());
        }
    }
    Ok(())
}

/// The replicas of pool `name`'s Deployment.
async fn replicas(deployments: &Api<Deployment>, name: &str) -> anyhow::Result<Option<i32>> {
    let d = deployments.get(&format!("{name}-agent")).await?;
    Ok(d.spec.replicas)
}

#[tokio::test]
async fn the_operator_rides_out_api_server_and_etcd_restarts_while_pools_change()
-> anyhow::Result<()> {
    let own = OwnCluster::start(1)?;
    let c = &own.cluster;
    let crd = repo_root().join("crds/inferencepools.inferpool.dev.yaml");
    c.kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferencepools.inferpool.dev",
    ])?;
    let ns = "default";
    let operator = OperatorProcess::spawn(c.kubeconfig(), "op-restarts", ns)?;
    let client = c.client().await?;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    apply(c, ns, &["r0", "r1", "r2"], 1)?;
    all_ready(&pools, &["r0", "r1", "r2"], &operator).await?;

    // Changes in flight as the API server dies, and one made once it is back.
    apply(c, ns, &["r3"], 1)?;
    apply(c, ns, &["r0"], 2)?;
    let started = Instant::now();
    own.restart("kube-apiserver")?;
    let back = started.elapsed();
    apply(c, ns, &["r4"], 1)?;
    all_ready(&pools, &["r0", "r1", "r2", "r3", "r4"], &operator).await?;
    assert_eq!(replicas(&deployments, "r0").await?, Some(2));
    inferpool_e2e::faults::row(
        "kube-apiserver SIGKILL + restart while pools change",
        "the operator recovers; every change lands, status current",
        &format!(
            "API back after {back:?}; all changes landed {:?} after the kill",
            started.elapsed()
        ),
    );

    // The same through an etcd restart, with a pool deleted once it is back.
    apply(c, ns, &["r1"], 2)?;
    apply(c, ns, &["r5"], 1)?;
    let started = Instant::now();
    own.restart("etcd")?;
    let back = started.elapsed();
    let delete = [
        "delete",
        "inferencepool",
        "r2",
        "-n",
        ns,
        "--cascade=foreground",
    ];
    c.kubectl(&[&delete[..], &["--wait=true", "--timeout=60s"]].concat())?;
    let left = ["r0", "r1", "r3", "r4", "r5"];
    all_ready(&pools, &left, &operator).await?;
    assert_eq!(replicas(&deployments, "r1").await?, Some(2));
    // The deleted pool's children go with it (garbage collection of owned objects).
    let left: Vec<String> = left.iter().map(|n| (*n).to_owned()).collect();
    let gone = wait_until(Duration::from_secs(60), || async {
        let owners = owned_by_pool::<Deployment>(&client, ns).await.ok()?;
        (!owners.contains_key("r2")).then_some(())
    })
    .await;
    assert!(gone.is_ok(), "r2's Deployment outlived it");
    one_child_each(&client, ns, &left).await?;
    inferpool_e2e::faults::row(
        "etcd SIGKILL + restart while pools change",
        "the operator recovers; changes land, a deleted pool's children go, no duplicates",
        &format!(
            "API ready after {back:?}; all changes landed {:?} after the kill",
            started.elapsed()
        ),
    );
    Ok(())
}

/// Its reconcile count once it stayed the same for two seconds.
async fn quiet(operator: &OperatorProcess) -> anyhow::Result<f64> {
    let mut last = (reconciles(operator), Instant::now());
    wait_until(Duration::from_secs(120), || {
        let seen = reconciles(operator);
        if seen != last.0 {
            last = (seen, Instant::now());
        }
        let settled = seen.filter(|_| last.1.elapsed() >= Duration::from_secs(2));
        async move { settled }
    })
    .await
}

/// Its count of reconciles (0 before the first).
fn reconciles(operator: &OperatorProcess) -> Option<f64> {
    operator.metric("inferpool_controller_reconciles_total")
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_stands_down_when_it_wakes() -> anyhow::Result<()> {
    let _alone = SHARED_CLUSTER.lock().await;
    install_crd()?;
    let c = cluster()?;
    let lease_ns = c.namespace("lost-lease")?;
    let ns = c.namespace("lost")?;
    let client = c.client().await?;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns.name());
    let frozen = OperatorProcess::spawn(c.kubeconfig(), "op-frozen", lease_ns.name())?;
    wait_until(Duration::from_secs(60), || async {
        frozen.leads().then_some(())
    })
    .await?;
    // Pools the woken leader would reconcile (it saw them), one changed while it is frozen.
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    apply(c, ns.name(), &names, 1)?;
    all_ready(&pools, &names, &frozen).await?;
    let awake = OperatorProcess::spawn(c.kubeconfig(), "op-awake", lease_ns.name())?;
    wait_until(Duration::from_secs(60), || async {
        reconciles(&awake).map(drop)
    })
    .await?;
    // Frozen once it is idle, so that every reconcile after it counts against it.
    let before = quiet(&frozen).await?;
    LocalPool::signal(frozen.child.id(), "-STOP")?;
    let stopped = Instant::now();
    let took_over = wait_until(Duration::from_secs(60), || async {
        awake.leads().then(|| stopped.elapsed())
    });
    let took_over = took_over.await;
    // Seen by the frozen leader's watches too, delivered when it wakes.
    let changed = apply(c, ns.name(), &["f0"], 2);
    // Woken whatever happened, so that it can be stopped.
    LocalPool::signal(frozen.child.id(), "-CONT")?;
    let took_over = took_over?;
    changed?;
    let woke = Instant::now();
    let stood_down = wait_until(Duration::from_secs(30), || async {
        (frozen.metric("inferpool_controller_leader") == Some(0.0)).then(|| woke.elapsed())
    })
    .await?;
    let after = reconciles(&frozen).unwrap_or(0.0);
    let fenced = frozen
        .metric("inferpool_controller_fenced_reconciles_total")
        .unwrap_or(0.0);
    // The new leader serves a new pool; the woken one writes nothing.
    c.kubectl_stdin(
        &["apply", "-n", ns.name(), "-f", "-"],
        &pool_yaml("woken", "{model: {}}"),
    )?;
    until_ready(&pools, "woken", Duration::from_secs(60)).await?;
    all_ready(&pools, &names, &awake).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    assert_eq!(
        replicas(&deployments, "f0").await?,
        Some(2),
        "the change landed"
    );
    assert!(awake.leads() && !frozen.leads(), "two leaders, or none");
    assert_eq!(after, before, "the old leader reconciled after it woke");
    assert_eq!(
        reconciles(&frozen).unwrap_or(0.0),
        after,
        "the old leader reconciled after standing down"
    );
    assert!(
        stood_down < Duration::from_secs(8),
        "stood down after {stood_down:?}"
    );
    inferpool_e2e::faults::row(
        "leader frozen past its lease (lease lost)",
        "standby takes over; the woken leader writes nothing and stands down",
        &format!(
            "taken over after {took_over:?}; stood down {stood_down:?} after waking; 0 reconciles \
             after waking ({fenced} fenced)"
        ),
    );
    Ok(())
}
