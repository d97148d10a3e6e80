//! Leader election with a coordination.k8s.io Lease: only the holder runs the controller.

use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// Where and how long the lease is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity (pod name, else host and pid).
    pub identity: String,
    /// How long the lease stays valid without renewal.
    pub duration: Duration,
}

/// Starts competing for the lease; the receiver says whether this replica leads. Dropping
/// every receiver releases the lease, so that a standby takes over at once.
pub async fn elect(
    client: kube::Client,
    s: &LeaseSettings,
) -> anyhow::Result<watch::Receiver<bool>> {
    let duration = s.duration.as_secs().max(2);
    // Renew half-way through the lease (grace = half): a holder whose renewal is delayed by
    // load keeps its lease instead of flapping to the standby and back.
    let params = LeaseParams::new(s.identity.clone(), duration, (duration / 2).max(1));
    let manager = LeaseManagerBuilder::new(client, s.name.clone())
        .with_namespace(s.namespace.clone())
        .with_parameters(params)
        .with_field_manager(crate::controller::names::MANAGER)
        .build()
        .await?;
    let (leading, _task) = manager.watch().await;
    Ok(leading)
}

/// Resolves once `leading` says this replica leads.
pub async fn until_leading(leading: &mut watch::Receiver<bool>) -> bool {
    leading.wait_for(|l| *l).await.is_ok()
}

/// Resolves once this replica stopped leading (or the lease task ended).
pub async fn until_not_leading(mut leading: watch::Receiver<bool>) {
    let _ = leading.wait_for(|l| !*l).await;
}
