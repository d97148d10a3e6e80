//! Discovery: where the gateway learns its pools and their agents, behind one trait with
//! two sources. Kubernetes: each InferencePool is a route (its served model name, its
//! routing settings) and its agents are the ready addresses of the EndpointSlices of its
//! agent Service, at the `grpc` and `http` ports; two watches feed one recomputation, and the
//! translation from objects to endpoints is plain code tested with plain objects. Static:
//! pools with fixed agent addresses (local mode).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt as _};
use tokio::sync::mpsc;

use super::core::policy::ForwardSettings;
use super::core::routes::{RouteSpec, RouteTable};
use super::core::view::{Endpoint, PoolSettings};
use crate::api::{InferencePool, RoutingSpec};
use crate::controller::names::{GRPC_PORT_NAME, HTTP_PORT_NAME, agent_name, served_name};

/// The label EndpointSlices carry with their Service's name.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// A load report older than this makes an agent unhealthy.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The ready agents of the Service `service` in `namespace`, from `slices`.
pub fn endpoints_of(slices: &[EndpointSlice], namespace: &str, service: &str) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = slices
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| s.labels().get(SERVICE_LABEL).map(String::as_str) == Some(service))
        .flat_map(slice_endpoints)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The slice's port named `name`.
fn port_named(slice: &EndpointSlice, name: &str) -> Option<u16> {
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

fn slice_endpoints(slice: &EndpointSlice) -> Vec<Endpoint> {
    let ports = port_named(slice, GRPC_PORT_NAME).zip(port_named(slice, HTTP_PORT_NAME));
    let Some((grpc, http)) = ports else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .flatten()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter(|e| {
            !e.conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false)
        })
        .flat_map(|e| {
            let name = e.target_ref.as_ref().and_then(|r| r.name.clone());
            e.addresses.iter().filter_map(move |a| {
                let ip: IpAddr = a.parse().ok()?;
                let id = name.clone().unwrap_or_else(|| a.clone());
                Some(Endpoint {
                    id,
                    grpc: SocketAddr::new(ip, grpc),
                    http: SocketAddr::new(ip, http),
                })
            })
        })
        .collect()
}

/// The route of `pool`: its served model and its routing settings (its metrics are
/// labelled with the pool's name, as its agents' metrics are by the chart's PodMonitor).
pub fn route_for(pool: &InferencePool, queue_wait: Duration) -> RouteSpec {
    let routing = &pool.spec.routing;
    let view = PoolSettings {
        failure_threshold: u32::try_from(routing.circuit_breaker.failure_threshold).unwrap_or(5),
        cooldown: Duration::from_secs(
            u64::try_from(routing.circuit_breaker.cooldown_seconds).unwrap_or(10),
        ),
        stale_after: STALE_AFTER,
    };
    RouteSpec {
        name: pool.name_any(),
        model: served_name(pool),
        strategy: routing.strategy,
        view,
        budget_percent: u32::try_from(routing.retry.budget_percent).unwrap_or(20),
        forward: ForwardSettings {
            max_retries: u32::try_from(routing.retry.max_retries).unwrap_or(2),
            queue_wait,
        },
        timeout: Duration::from_secs(u64::try_from(routing.request_timeout_seconds).unwrap_or(300)),
        session_header: routing.session_header.to_ascii_lowercase(),
    }
}

enum Change {
    Pools(Vec<InferencePool>),
    Slices(Vec<EndpointSlice>),
}

/// A source of pools and their agents for the gateway.
pub trait Discovery {
    /// Puts the source's pools into `table` and keeps them in step for as long as the
    /// source changes (a static source returns once they are in).
    fn run<T: RouteTable>(self, table: Arc<T>) -> impl Future<Output = ()> + Send;
}

/// InferencePools and EndpointSlices of a cluster.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // kube's Client is not Debug
pub struct KubernetesDiscovery {
    /// The cluster.
    pub client: Client,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
}

impl Discovery for KubernetesDiscovery {
    fn run<T: RouteTable>(self, table: Arc<T>) -> impl Future<Output = ()> + Send {
        discover(self.client, table, self.queue_wait)
    }
}

/// Pools with a fixed list of agents each.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    /// Each pool and its agents.
    pub pools: Vec<(InferencePool, Vec<Endpoint>)>,
    /// Longest a request waits for a free agent.
    pub queue_wait: Duration,
}

impl Discovery for StaticDiscovery {
    async fn run<T: RouteTable>(self, table: Arc<T>) {
        for (pool, endpoints) in &self.pools {
            let spec = route_for(pool, self.queue_wait);
            let model = spec.model.clone();
            table.set_route(spec);
            table.set_endpoints(&model, endpoints);
        }
    }
}

/// Keeps `table`'s routes in step with the cluster until the watches end.
async fn discover<T: RouteTable>(client: Client, table: Arc<T>, queue_wait: Duration) {
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(follow(
        Api::<InferencePool>::all(client.clone()),
        tx.clone(),
        Change::Pools,
    ));
    tokio::spawn(follow(
        Api::<EndpointSlice>::all(client),
        tx,
        Change::Slices,
    ));
    let mut state = Routes::default();
    let (mut pools, mut slices) = (Vec::new(), Vec::new());
    while let Some(change) = rx.recv().await {
        match change {
            Change::Pools(p) => pools = p,
            Change::Slices(s) => slices = s,
        }
        state.sync(&*table, &pools, &slices, queue_wait);
    }
}

/// Follows every object of `api`, sending the whole current set after each change.
async fn follow<K, F>(api: Api<K>, tx: mpsc::Sender<Change>, wrap: F)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(Vec<K>) -> Change,
{
    let mut objects: BTreeMap<(String, String), K> = BTreeMap::new();
    let mut init: BTreeMap<(String, String), K> = BTreeMap::new();
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Ok(Event::Apply(o)) => {
                objects.insert(key(&o), o);
            }
            Ok(Event::Delete(o)) => {
                objects.remove(&key(&o));
            }
            Ok(Event::Init) => init.clear(),
            Ok(Event::InitApply(o)) => {
                init.insert(key(&o), o);
            }
            Ok(Event::InitDone) => objects = std::mem::take(&mut init),
            Err(e) => {
                tracing::warn!(error = %e, "discovery watch failed; retrying");
                continue;
            }
        }
        if tx
            .send(wrap(objects.values().cloned().collect()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The routes discovery made, by served model name, with what they were made from.
#[derive(Debug, Default)]
struct Routes {
    routes: HashMap<String, RoutingSpec>,
}

impl Routes {
    fn sync(
        &mut self,
        table: &impl RouteTable,
        pools: &[InferencePool],
        slices: &[EndpointSlice],
        wait: Duration,
    ) {
        let mut seen = Vec::new();
        for pool in pools {
            let model = served_name(pool);
            let routing = &pool.spec.routing;
            if self.routes.get(&model) != Some(routing) {
                table.set_route(route_for(pool, wait));
                self.routes.insert(model.clone(), routing.clone());
            }
            let namespace = pool.namespace().unwrap_or_default();
            table.set_endpoints(&model, &endpoints_of(slices, &namespace, &agent_name(pool)));
            seen.push(model);
        }
        self.routes.retain(|model, _| {
            let keep = seen.contains(model);
            if !keep {
                table.remove_route(model);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(ns: &str, service: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{service}-x"), "namespace": ns,
                "labels": {SERVICE_LABEL: service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 50051}],
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    #[test]
    fn ready_addresses_of_the_pools_service_at_its_grpc_and_http_ports() {
        let slices = [
            slice(
                "ns",
                "p-agent",
                serde_json::json!([
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "p-agent-a"}},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
                    {"addresses": ["10.0.0.4"]},
                ]),
            ),
            slice(
                "other",
                "p-agent",
                serde_json::json!([{"addresses": ["10.9.9.9"]}]),
            ),
            slice(
                "ns",
                "q-agent",
                serde_json::json!([{"addresses": ["10.8.8.8"]}]),
            ),
        ];
        let got = endpoints_of(&slices, "ns", "p-agent");
        let want = [
            Endpoint {
                id: "10.0.0.4".into(),
                grpc: "10.0.0.4:50051".parse().unwrap(),
                http: "10.0.0.4:8080".parse().unwrap(),
            },
            Endpoint {
                id: "p-agent-a".into(),
                grpc: "10.0.0.1:50051".parse().unwrap(),
                http: "10.0.0.1:8080".parse().unwrap(),
            },
        ];
        assert_eq!(got, want);
        // A Service without both agent ports names no agents (none could be used whole).
        let mut grpc_only = slice(
            "ns",
            "p-agent",
            serde_json::json!([{"addresses": ["10.0.0.5"]}]),
        );
        grpc_only.ports = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "grpc", "port": 50051})).unwrap(),
        ]);
        assert_eq!(endpoints_of(&[grpc_only], "ns", "p-agent"), []);
    }
}
