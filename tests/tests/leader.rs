//! Two real operator processes against the test control plane: exactly one leads and
//! reconciles; when the leader is killed the other takes over within the lease time, and
//! the new leader's first reconciles change nothing (a restarted operator causes no churn).

use std::time::{Duration, Instant};

use inferpool_e2e::cluster::cluster;
use inferpool_e2e::controller::install_crd;
use inferpool_e2e::operator::OperatorProcess;
use inferpool_e2e::pools::{pool_yaml, until_ready, versions};
use inferpool_e2e::wait::wait_until;
use inferpool_operator::api::InferencePool;
use kube::Api;

/// What `OperatorProcess` runs with.
const LEASE_SECONDS: u64 = 5;

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over() -> anyhow::Result<()> {
    install_crd()?;
    let c = cluster()?;
    let lease_ns = c.namespace("lease")?;
    let ns = c.namespace("leader")?;
    let client = c.client().await?;
    let a = OperatorProcess::spawn(c.kubeconfig(), "op-a", lease_ns.name())?;
    let b = OperatorProcess::spawn(c.kubeconfig(), "op-b", lease_ns.name())?;
    let a_leads = wait_until(Duration::from_secs(60), || async {
        match (a.leads(), b.leads()) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await?;
    let (mut leader, standby) = if a_leads { (a, b) } else { (b, a) };
    let holder = c.kubectl(&[
        "get",
        "lease",
        "inferpool-operator",
        "-n",
        lease_ns.name(),
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])?;
    assert_eq!(holder, leader.identity);
    // A replica that led earlier (before a renewal missed under load) has counted reconciles;
    // what matters is that a standby reconciles nothing while it stands by.
    let standby_count = standby.metric("inferpool_controller_reconciles_total");

    let pools: Api<InferencePool> = Api::namespaced(client.clone(), ns.name());
    let pool = |name: &str| pool_yaml(name, "{model: {}, replicas: 2}");
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], &pool("first"))?;
    until_ready(&pools, "first", Duration::from_secs(60)).await?;
    assert!(
        leader
            .metric("inferpool_controller_reconciles_total")
            .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(
        standby.metric("inferpool_controller_reconciles_total"),
        Some(0.0),
        "the standby reconciled"
    );
    let before = versions(&client, ns.name(), "first").await?;

    // Kill the leader outright: its lease is not released and must expire.
    leader.child.kill()?;
    let killed = Instant::now();
    c.kubectl_stdin(&["apply", "-n", ns.name(), "-f", "-"], &pool("second"))?;
    until_ready(&pools, "second", Duration::from_secs(60)).await?;
    let took = killed.elapsed();
    assert!(standby.leads(), "the standby did not take over");
    assert!(
        took < Duration::from_secs(LEASE_SECONDS * 3 + 5),
        "takeover took {took:?}"
    );
    // The new leader reconciled `first` at start; nothing about it may have been written.
    let since_takeover = standby_count.unwrap_or(0.0) + 2.0;
    wait_until(Duration::from_secs(30), || async {
        (standby.metric("inferpool_controller_reconciles_total")? >= since_takeover).then_some(())
    })
    .await?;
    assert_eq!(
        before,
        versions(&client, ns.name(), "first").await?,
        "the new leader churned an unchanged pool"
    );
    Ok(())
}
