//! The incremental index between the watches and the route table: each watch event
//! touches only the route of the pool it concerns (a slice event re-sends that pool's
//! agents, a pool event its route), so a cluster with many pools costs the same per event
//! as one with a single pool. A relist (after a watch restart) is diffed against what is
//! known: objects it no longer lists are deleted, those it lists again change nothing
//! unless they changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt as _;
use kube::runtime::watcher::Event;

use super::objects::{Key, route_for, service_of_pool, service_of_slice, slice_endpoints};
use crate::api::InferencePool;
use crate::gateway::core::routes::{RouteSpec, RouteTable};
use crate::gateway::core::view::Endpoint;

/// One watch event, of either kind.
#[derive(Debug)]
pub enum Change {
    /// An InferencePool event.
    Pool(Box<Event<InferencePool>>),
    /// An agent EndpointSlice event.
    Slice(Box<Event<EndpointSlice>>),
}

/// What discovery knows of the cluster, and so of the route table.
#[derive(Debug, Default)]
pub struct Index {
    queue_wait: Duration,
    /// Each pool's route, by its agent Service (one Service per pool).
    routes: HashMap<Key, RouteSpec>,
    /// Each Service's agents, by slice name.
    services: HashMap<Key, BTreeMap<String, Vec<Endpoint>>>,
    /// The Service of each slice (namespace, slice name), for deletes.
    slices: HashMap<Key, Key>,
    /// Objects of a relist in progress.
    listing_pools: Option<Vec<InferencePool>>,
    listing_slices: Option<Vec<EndpointSlice>>,
    pools_listed: bool,
    slices_listed: bool,
}

impl Index {
    /// An empty index whose routes queue requests for at most `queue_wait`.
    pub fn new(queue_wait: Duration) -> Self {
        Self {
            queue_wait,
            ..Self::default()
        }
    }

    /// Whether both kinds were listed once: the table then holds the whole cluster.
    pub fn synced(&self) -> bool {
        self.pools_listed && self.slices_listed
    }

    /// Applies one event to `table`.
    pub fn handle(&mut self, table: &impl RouteTable, change: Change) {
        match change {
            Change::Pool(event) => self.on_pool(table, *event),
            Change::Slice(event) => self.on_slice(table, *event),
        }
    }

    fn on_pool(&mut self, table: &impl RouteTable, event: Event<InferencePool>) {
        match event {
            Event::Apply(pool) => self.apply_pool(table, &pool),
            Event::Delete(pool) => self.delete_pool(table, &service_of_pool(&pool)),
            Event::Init => self.listing_pools = Some(Vec::new()),
            Event::InitApply(pool) => self.listing_pools.get_or_insert_default().push(pool),
            Event::InitDone => {
                let listed = self.listing_pools.take().unwrap_or_default();
                self.relist_pools(table, &listed);
                self.pools_listed = true;
            }
        }
    }

    fn on_slice(&mut self, table: &impl RouteTable, event: Event<EndpointSlice>) {
        match event {
            Event::Apply(slice) => self.apply_slice(table, &slice),
            Event::Delete(slice) => self.delete_slice(table, &slice_key(&slice)),
            Event::Init => self.listing_slices = Some(Vec::new()),
            Event::InitApply(slice) => self.listing_slices.get_or_insert_default().push(slice),
            Event::InitDone => {
                let listed = self.listing_slices.take().unwrap_or_default();
                self.relist_slices(table, &listed);
                self.slices_listed = true;
            }
        }
    }

    fn apply_pool(&mut self, table: &impl RouteTable, pool: &InferencePool) {
        let service = service_of_pool(pool);
        let spec = route_for(pool, self.queue_wait);
        match self.routes.get(&service) {
            Some(old) if *old == spec => return,
            // A renamed model: the old name stops being served (unless another pool has it).
            Some(old) if old.model != spec.model => {
                let old = old.model.clone();
                self.routes.remove(&service);
                self.release_model(table, &old);
            }
            _ => {}
        }
        self.install(table, &service, spec);
    }

    fn delete_pool(&mut self, table: &impl RouteTable, service: &Key) {
        if let Some(old) = self.routes.remove(service) {
            self.release_model(table, &old.model);
        }
    }

    /// Serves `spec` with the agents known for `service` (a new route starts with none).
    fn install(&mut self, table: &impl RouteTable, service: &Key, spec: RouteSpec) {
        let model = spec.model.clone();
        table.set_route(spec.clone());
        self.routes.insert(service.clone(), spec);
        table.set_endpoints(&model, &self.agents_of(service));
    }

    /// Stops serving `model`, or hands it to another pool serving the same name (two
    /// pools in different namespaces may; the table serves one of them).
    fn release_model(&mut self, table: &impl RouteTable, model: &str) {
        let heir = self.routes.iter().find(|(_, s)| s.model == model);
        match heir.map(|(service, spec)| (service.clone(), spec.clone())) {
            Some((service, spec)) => self.install(table, &service, spec),
            None => table.remove_route(model),
        }
    }

    fn apply_slice(&mut self, table: &impl RouteTable, slice: &EndpointSlice) {
        let key = slice_key(slice);
        let Some(service) = service_of_slice(slice) else {
            return self.delete_slice(table, &key);
        };
        // A slice moved to another Service (labels are mutable) leaves its old one.
        if self.slices.get(&key).is_some_and(|old| *old != service) {
            self.delete_slice(table, &key);
        }
        let endpoints = slice_endpoints(slice);
        let known = self.services.entry(service.clone()).or_default();
        if known.get(&key.1) == Some(&endpoints) {
            return;
        }
        known.insert(key.1.clone(), endpoints);
        self.slices.insert(key, service.clone());
        self.refresh(table, &service);
    }

    fn delete_slice(&mut self, table: &impl RouteTable, key: &Key) {
        let Some(service) = self.slices.remove(key) else {
            return;
        };
        if let Some(known) = self.services.get_mut(&service) {
            known.remove(&key.1);
            if known.is_empty() {
                self.services.remove(&service);
            }
        }
        self.refresh(table, &service);
    }

    /// Sends the agents of `service` to its pool's route, if a pool has that Service.
    fn refresh(&self, table: &impl RouteTable, service: &Key) {
        if let Some(spec) = self.routes.get(service) {
            table.set_endpoints(&spec.model, &self.agents_of(service));
        }
    }

    /// The agents of `service` over all its slices, each once, in a stable order.
    fn agents_of(&self, service: &Key) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .services
            .get(service)
            .into_iter()
            .flat_map(BTreeMap::values)
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn relist_pools(&mut self, table: &impl RouteTable, listed: &[InferencePool]) {
        let keep: HashSet<Key> = listed.iter().map(service_of_pool).collect();
        let gone: Vec<Key> = self
            .routes
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for service in gone {
            self.delete_pool(table, &service);
        }
        for pool in listed {
            self.apply_pool(table, pool);
        }
    }

    fn relist_slices(&mut self, table: &impl RouteTable, listed: &[EndpointSlice]) {
        let keep: HashSet<Key> = listed.iter().map(slice_key).collect();
        let gone: Vec<Key> = self
            .slices
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.delete_slice(table, &key);
        }
        for slice in listed {
            self.apply_slice(table, slice);
        }
    }
}

fn slice_key(slice: &EndpointSlice) -> Key {
    (slice.namespace().unwrap_or_default(), slice.name_any())
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
