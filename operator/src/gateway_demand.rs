//! The gateway's demand, told to the leader: whenever a pool's held requests change (the
//! gateway's demand signal), and every `REFRESH_SECONDS` while any are held, this replica
//! writes its own `held.inferpool.dev/<pod>` annotation on the pool (a JSON merge patch of
//! that one key; removed at 0). See `controller::demand` for how the leader reads it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::api::{Api, Patch, PatchParams};

use crate::api::InferencePool;
use crate::controller::demand::{REFRESH_SECONDS, held_key, held_value};
use crate::gateway::dispatch::gateway::{Gateway, HeldRequests};

/// Least time between two rounds of writes: a burst of arrivals is one write per pool.
const COALESCE: Duration = Duration::from_millis(200);

/// This replica's name in the annotations: its pod's (`POD_NAME`), else host and pid.
pub fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Publishes `gateway`'s held requests as `identity`, until the task is dropped.
pub async fn publish_demand(client: kube::Client, gateway: Arc<Gateway>, identity: String) {
    let key = held_key(&identity);
    let demand = gateway.demand();
    let mut published: HashMap<(String, String), u32> = HashMap::new();
    loop {
        let refresh = tokio::time::sleep(Duration::from_secs(REFRESH_SECONDS));
        tokio::select! {
            () = demand.notified() => {}
            () = refresh => {}
        }
        for held in gateway.held() {
            let pool = (held.namespace.clone(), held.name.clone());
            let last = published.get(&pool).copied().unwrap_or(0);
            if (held.held == 0 && last == 0) || !write(&client, &key, &held).await {
                continue;
            }
            published.insert(pool, held.held);
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// Writes (or at 0 removes) this replica's count on its pool; false when it failed.
async fn write(client: &kube::Client, key: &str, held: &HeldRequests) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = (held.held > 0).then(|| held_value(held.held, now));
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    let api: Api<InferencePool> = Api::namespaced(client.clone(), &held.namespace);
    match api
        .patch(&held.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(pool = %held.name, error = %e, "cannot publish held requests");
            false
        }
    }
}
