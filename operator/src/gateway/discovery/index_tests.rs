//! The index with plain objects: pools and slices built here, and a table that records
//! what it was told, so that each test sees both the result and how much was touched.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::json;

use super::*;

/// A route table that keeps routes and agents by model and logs every call.
#[derive(Debug, Default)]
struct Table {
    routes: Mutex<BTreeMap<String, (String, Vec<Endpoint>)>>,
    calls: Mutex<Vec<String>>,
}

impl RouteTable for Table {
    fn set_route(&self, spec: RouteSpec) {
        self.log(format!("route {}", spec.model));
        let mut routes = self.routes.lock().unwrap();
        routes.insert(spec.model, (spec.name, Vec::new()));
    }

    fn set_endpoints(&self, model: &str, endpoints: &[Endpoint]) {
        self.log(format!("endpoints {model} {}", endpoints.len()));
        if let Some(route) = self.routes.lock().unwrap().get_mut(model) {
            route.1 = endpoints.to_vec();
        }
    }

    fn remove_route(&self, model: &str) {
        self.log(format!("remove {model}"));
        self.routes.lock().unwrap().remove(model);
    }
}

impl Table {
    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// The calls since the last look.
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Served model -> (pool name, agent addresses).
    fn served(&self) -> BTreeMap<String, (String, Vec<String>)> {
        let routes = self.routes.lock().unwrap();
        let ips = |e: &[Endpoint]| e.iter().map(|e| e.grpc.ip().to_string()).collect();
        routes
            .iter()
            .map(|(m, (name, e))| (m.clone(), (name.clone(), ips(e))))
            .collect()
    }
}

fn pool(ns: &str, name: &str, served: &str) -> InferencePool {
    serde_json::from_value(json!({
        "apiVersion": "inferpool.dev/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"servedName": served}},
    }))
    .unwrap()
}

/// Slice `name` of pool `pool`'s agent Service, with ready agents at `ips`.
fn slice(ns: &str, pool: &str, name: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns,
            "labels": {"kubernetes.io/service-name": format!("{pool}-agent")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 50051}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn served(pool: &str, ips: &[&str]) -> (String, Vec<String>) {
    (pool.into(), ips.iter().map(|s| (*s).to_owned()).collect())
}

fn apply_pool(index: &mut Index, table: &Table, p: InferencePool) {
    index.handle(table, Change::Pool(Box::new(Event::Apply(p))));
}

fn apply_slice(index: &mut Index, table: &Table, s: EndpointSlice) {
    index.handle(table, Change::Slice(Box::new(Event::Apply(s))));
}

#[test]
fn each_event_touches_only_its_own_pool() {
    let (table, mut index) = (Table::default(), Index::new(Duration::from_secs(1)));
    apply_pool(&mut index, &table, pool("ns", "p", "m-p"));
    apply_pool(&mut index, &table, pool("ns", "q", "m-q"));
    assert_eq!(
        table.take_calls(),
        [
            "route m-p",
            "endpoints m-p 0",
            "route m-q",
            "endpoints m-q 0"
        ]
    );
    // Agents of q, over two slices of its Service: only q's agents are sent, each time.
    apply_slice(&mut index, &table, slice("ns", "q", "q-1", &["10.0.0.1"]));
    apply_slice(&mut index, &table, slice("ns", "q", "q-2", &["10.0.0.2"]));
    assert_eq!(table.take_calls(), ["endpoints m-q 1", "endpoints m-q 2"]);
    // The same slice again changes nothing, so the table hears nothing.
    apply_slice(&mut index, &table, slice("ns", "q", "q-2", &["10.0.0.2"]));
    apply_pool(&mut index, &table, pool("ns", "q", "m-q"));
    assert_eq!(table.take_calls(), Vec::<String>::new());
    // A slice of a Service no pool has (yet) touches no route; its pool finds it later.
    apply_slice(
        &mut index,
        &table,
        slice("other", "p", "p-1", &["10.0.0.9"]),
    );
    assert_eq!(table.take_calls(), Vec::<String>::new());
    let removed = slice("ns", "q", "q-1", &[]);
    index.handle(&table, Change::Slice(Box::new(Event::Delete(removed))));
    assert_eq!(table.take_calls(), ["endpoints m-q 1"]);
    let want = BTreeMap::from([
        ("m-p".into(), served("p", &[])),
        ("m-q".into(), served("q", &["10.0.0.2"])),
    ]);
    assert_eq!(table.served(), want);
}

#[test]
fn a_changed_pool_keeps_its_agents_and_a_deleted_one_goes() {
    let (table, mut index) = (Table::default(), Index::new(Duration::from_secs(1)));
    apply_slice(&mut index, &table, slice("ns", "p", "p-1", &["10.0.0.1"]));
    apply_pool(&mut index, &table, pool("ns", "p", "old"));
    assert_eq!(table.served()["old"], served("p", &["10.0.0.1"]));
    // Renamed model: the old name is no longer served, the new one has the agents.
    table.take_calls();
    apply_pool(&mut index, &table, pool("ns", "p", "new"));
    assert_eq!(
        table.take_calls(),
        ["remove old", "route new", "endpoints new 1"]
    );
    index.handle(
        &table,
        Change::Pool(Box::new(Event::Delete(pool("ns", "p", "new")))),
    );
    assert_eq!(table.take_calls(), ["remove new"]);
    assert!(table.served().is_empty());
}

#[test]
fn two_pools_of_one_model_hand_it_over_on_delete() {
    let (table, mut index) = (Table::default(), Index::new(Duration::from_secs(1)));
    apply_slice(&mut index, &table, slice("a", "p", "p-1", &["10.0.0.1"]));
    apply_slice(&mut index, &table, slice("b", "p", "p-1", &["10.0.0.2"]));
    apply_pool(&mut index, &table, pool("a", "p", "m"));
    apply_pool(&mut index, &table, pool("b", "p", "m"));
    index.handle(
        &table,
        Change::Pool(Box::new(Event::Delete(pool("b", "p", "m")))),
    );
    assert_eq!(table.served()["m"], served("p", &["10.0.0.1"]));
}

#[test]
fn a_relist_deletes_what_it_no_longer_lists_and_resends_nothing_else() {
    let (table, mut index) = (Table::default(), Index::new(Duration::from_secs(1)));
    assert!(!index.synced());
    let relist_pools = |index: &mut Index, pools: Vec<InferencePool>| {
        index.handle(&table, Change::Pool(Box::new(Event::Init)));
        for p in pools {
            index.handle(&table, Change::Pool(Box::new(Event::InitApply(p))));
        }
        index.handle(&table, Change::Pool(Box::new(Event::InitDone)));
    };
    relist_pools(
        &mut index,
        vec![pool("ns", "p", "m-p"), pool("ns", "q", "m-q")],
    );
    assert!(!index.synced(), "slices were not listed yet");
    index.handle(&table, Change::Slice(Box::new(Event::Init)));
    let s = slice("ns", "q", "q-1", &["10.0.0.1"]);
    index.handle(&table, Change::Slice(Box::new(Event::InitApply(s.clone()))));
    index.handle(&table, Change::Slice(Box::new(Event::InitDone)));
    assert!(index.synced());
    // The watch restarts: p is gone, q unchanged, q's slice too.
    table.take_calls();
    relist_pools(&mut index, vec![pool("ns", "q", "m-q")]);
    assert_eq!(table.take_calls(), ["remove m-p"]);
    index.handle(&table, Change::Slice(Box::new(Event::Init)));
    index.handle(&table, Change::Slice(Box::new(Event::InitDone)));
    assert_eq!(table.take_calls(), ["endpoints m-q 0"]);
    assert_eq!(table.served()["m-q"], served("q", &[]));
}

#[test]
fn a_slice_that_leaves_its_service_takes_its_agents_along() {
    let (table, mut index) = (Table::default(), Index::new(Duration::from_secs(1)));
    apply_pool(&mut index, &table, pool("ns", "p", "m-p"));
    apply_pool(&mut index, &table, pool("ns", "q", "m-q"));
    apply_slice(&mut index, &table, slice("ns", "p", "s", &["10.0.0.1"]));
    let mut moved = slice("ns", "q", "s", &["10.0.0.1"]);
    apply_slice(&mut index, &table, moved.clone());
    assert_eq!(table.served()["m-p"], served("p", &[]));
    assert_eq!(table.served()["m-q"], served("q", &["10.0.0.1"]));
    moved.metadata.labels = None;
    apply_slice(&mut index, &table, moved);
    assert_eq!(table.served()["m-q"], served("q", &[]));
}
