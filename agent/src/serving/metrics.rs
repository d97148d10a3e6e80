//! The agent's Prometheus metrics: `inferpool_agent_*`, plus the gauges the Gateway API
//! Inference Extension's model-server protocol reads under vLLM's names, so third-party
//! routers can balance across our agents. Gauges are refreshed from the engine's load at
//! scrape time; labels are fixed sets (endpoint, error type, priority), never free text.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::cache_metrics::CacheMetrics;
use super::device_metrics::DeviceMetrics;
use super::mirrored::MirroredCounter;
use crate::cache::CacheStats;
use crate::generation::Priority;
use crate::scheduler::batcher::Load;
use crate::scheduler::blocks::PrefixStats;

/// Labels of finished requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `chat`, `completion`, `embedding`, `grpc_generate`.
    pub endpoint: &'static str,
    /// `ok` or the error's type.
    pub outcome: &'static str,
}

/// Label of a queue gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    /// The priority.
    pub priority: &'static str,
}

/// Label of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The endpoint.
    pub endpoint: &'static str,
}

/// Every metric of the agent.
#[derive(Debug)]
pub struct AgentMetrics {
    /// Requests ended, by endpoint and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Prompt tokens processed.
    pub prompt_tokens: Counter,
    /// Tokens generated.
    pub generation_tokens: Counter,
    /// Time to first token.
    pub ttft: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Whole request duration.
    pub duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    running: Gauge,
    batch_limit: Gauge,
    waiting: Family<PriorityLabels, Gauge>,
    kv_used: Gauge,
    kv_total: Gauge,
    kv_usage: Gauge<f64, AtomicU64>,
    preemptions: MirroredCounter,
    /// 1 while draining.
    pub draining: Gauge,
    /// 1 once the model is loaded and warmed up.
    pub ready: Gauge,
    vllm_waiting: Gauge,
    vllm_running: Gauge,
    vllm_kv_usage: Gauge<f64, AtomicU64>,
    cache: CacheMetrics,
    /// Per-device health, memory pool and NVML readings.
    pub devices: DeviceMetrics,
    prefix: PrefixMetrics,
}

/// Prefix reuse in tokens, under our names and vLLM's (the same counters twice, so that
/// dashboards and routers written for vLLM read them as they are).
#[derive(Debug, Default)]
struct PrefixMetrics {
    queries: MirroredCounter,
    hits: MirroredCounter,
    blocks: Gauge,
}

impl PrefixMetrics {
    fn register(&self, own: &mut Registry) {
        own.register(
            "prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            self.queries.counter(),
        );
        own.register(
            "prefix_cache_hits",
            "Prompt tokens whose KV blocks came from the prefix cache",
            self.hits.counter(),
        );
        own.register(
            "prefix_cache_blocks",
            "KV blocks held by the prefix cache (free to take)",
            self.blocks.clone(),
        );
    }

    fn register_vllm(&self, registry: &mut Registry) {
        registry.register(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in tokens",
            self.queries.counter(),
        );
        registry.register(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in tokens",
            self.hits.counter(),
        );
    }

    fn observe(&self, stats: &PrefixStats) {
        self.queries.observe(stats.queried_tokens);
        self.hits.observe(stats.hit_tokens);
        self.blocks.set(gauge_value(stats.cached_blocks));
    }
}

fn latency_histogram() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl AgentMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            ttft: Family::new_with_constructor(latency_histogram),
            duration: Family::new_with_constructor(latency_histogram),
            running: Gauge::default(),
            batch_limit: Gauge::default(),
            waiting: Family::default(),
            kv_used: Gauge::default(),
            kv_total: Gauge::default(),
            kv_usage: Gauge::default(),
            preemptions: MirroredCounter::default(),
            draining: Gauge::default(),
            ready: Gauge::default(),
            cache: CacheMetrics::new(),
            devices: DeviceMetrics::default(),
            prefix: PrefixMetrics::default(),
            vllm_waiting: Gauge::default(),
            vllm_running: Gauge::default(),
            vllm_kv_usage: Gauge::default(),
        };
        m.register_own(registry.sub_registry_with_prefix("inferpool_agent"));
        registry.register(
            "vllm:num_requests_waiting",
            "Requests waiting",
            m.vllm_waiting.clone(),
        );
        registry.register(
            "vllm:num_requests_running",
            "Requests running",
            m.vllm_running.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage, 0..1",
            m.vllm_kv_usage.clone(),
        );
        m.prefix.register_vllm(registry);
        m
    }

    fn register_own(&self, r: &mut Registry) {
        r.register(
            "requests",
            "Requests ended, by endpoint and outcome",
            self.requests.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens processed",
            self.prompt_tokens.clone(),
        );
        r.register(
            "generation_tokens",
            "Tokens generated",
            self.generation_tokens.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Time to first token",
            self.ttft.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request duration",
            self.duration.clone(),
        );
        r.register(
            "requests_running",
            "Sequences in the running batch",
            self.running.clone(),
        );
        r.register(
            "batch_limit",
            "Sequences that may run together now (the adaptive strategy moves it)",
            self.batch_limit.clone(),
        );
        r.register(
            "requests_waiting",
            "Requests queued, by priority",
            self.waiting.clone(),
        );
        r.register(
            "kv_cache_blocks_used",
            "KV-cache blocks held",
            self.kv_used.clone(),
        );
        r.register(
            "kv_cache_blocks_total",
            "KV-cache blocks in the budget",
            self.kv_total.clone(),
        );
        r.register(
            "kv_cache_usage_ratio",
            "KV-cache usage, 0..1",
            self.kv_usage.clone(),
        );
        r.register(
            "preemptions",
            "Sequences preempted for KV blocks",
            self.preemptions.counter(),
        );
        r.register("draining", "1 while draining", self.draining.clone());
        self.cache.register(r);
        self.devices.register(r);
        self.prefix.register(r);
        r.register(
            "ready",
            "1 once the model is loaded and warmed up",
            self.ready.clone(),
        );
    }

    /// Refreshes the load gauges (called before each scrape).
    pub fn observe_load(&self, load: &Load) {
        let running = gauge_value(load.running);
        self.running.set(running);
        self.batch_limit.set(gauge_value(load.batch_limit));
        self.vllm_running.set(running);
        self.vllm_waiting.set(gauge_value(load.waiting()));
        for (p, depth) in Priority::ALL.iter().zip(load.queued) {
            let labels = PriorityLabels {
                priority: p.as_str(),
            };
            self.waiting.get_or_create(&labels).set(gauge_value(depth));
        }
        self.kv_used.set(gauge_value(load.kv_blocks_used));
        self.kv_total.set(gauge_value(load.kv_blocks_total));
        self.kv_usage.set(load.kv_usage());
        self.vllm_kv_usage.set(load.kv_usage());
        self.preemptions.observe(load.preemptions);
        self.prefix.observe(&load.prefix);
    }

    /// Refreshes the response cache's counts (called before each scrape).
    pub fn observe_cache(&self, stats: &CacheStats) {
        self.cache.observe(stats);
    }

    /// Records one response cache lookup's duration.
    pub fn cache_lookup(&self, took: std::time::Duration) {
        self.cache.lookup.observe(took.as_secs_f64());
    }

    /// Counts one ended request.
    pub fn request_ended(&self, endpoint: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, outcome })
            .inc();
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_shows_under_our_names_and_vllms() {
        let mut registry = Registry::default();
        let m = AgentMetrics::register(&mut registry);
        m.observe_load(&Load {
            running: 3,
            queued: [0, 1, 2, 0],
            kv_blocks_used: 5,
            kv_blocks_total: 20,
            preemptions: 2,
            prefix: PrefixStats {
                queried_tokens: 100,
                hit_tokens: 64,
                cached_blocks: 4,
            },
            batch_limit: 6,
            time_per_token: None,
        });
        m.request_ended("chat", "ok");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "vllm:num_requests_waiting 3",
            "vllm:num_requests_running 3",
            "vllm:kv_cache_usage_perc 0.25",
            "inferpool_agent_requests_waiting{priority=\"normal\"} 2",
            "inferpool_agent_kv_cache_blocks_used 5",
            "inferpool_agent_preemptions_total 2",
            "inferpool_agent_prefix_cache_hits_total 64",
            "inferpool_agent_prefix_cache_blocks 4",
            "inferpool_agent_batch_limit 6",
            "vllm:prefix_cache_queries_total 100",
            "vllm:prefix_cache_hits_total 64",
            "inferpool_agent_requests_total{endpoint=\"chat\",outcome=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
