use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The agents' response cache: exact matches, and optionally semantically similar prompts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Cache complete responses to deterministic requests (temperature 0 or a fixed seed).
    #[serde(default = "default_enabled")]
    pub enabled: bool,

    /// Most memory the cache may hold per agent, for example `256Mi`. Least recently used
    /// entries are evicted first, and sooner under memory pressure.
    #[serde(default = "default_capacity")]
    pub capacity: Quantity,

    /// How long an entry stays valid, in seconds.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 2592000))]
    pub ttl_seconds: i32,

    /// Also answer prompts whose embedding is close enough to a cached one.
    #[serde(default)]
    pub semantic: SemanticCacheSpec,

    /// Shrink the cache when the agent's memory runs high.
    #[serde(default)]
    pub memory_pressure: MemoryPressureSpec,

    /// Keep the cache on a volume so that it survives agent restarts.
    #[serde(default)]
    pub persistence: PersistenceSpec,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            capacity: default_capacity(),
            ttl_seconds: default_ttl(),
            semantic: SemanticCacheSpec::default(),
            memory_pressure: MemoryPressureSpec::default(),
            persistence: PersistenceSpec::default(),
        }
    }
}

fn default_enabled() -> bool {
    true
}
fn default_capacity() -> Quantity {
    Quantity("256Mi".to_owned())
}
fn default_ttl() -> i32 {
    3600
}

/// Semantic matching: prompts are embedded (all-MiniLM-L6-v2) and a cached response is
/// reused when the cosine similarity reaches `threshold`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SemanticCacheSpec {
    /// Turn semantic matching on.
    #[serde(default)]
    pub enabled: bool,

    /// Least cosine similarity, in (0, 1], for a cached response to be reused. 1 allows only
    /// prompts with identical embeddings.
    #[serde(default = "default_threshold")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0")
        .message("cache.semantic.threshold must be in (0, 1]"))]
    pub threshold: f64,
}

impl Default for SemanticCacheSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: default_threshold(),
        }
    }
}

fn default_threshold() -> f64 {
    0.95
}

/// Memory pressure: the agent reads its cgroup's memory limit and usage (the machine's
/// when unlimited); above `highWatermark` of the limit it drops the least recently served
/// entries until usage would be at `lowWatermark`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.lowWatermark <= self.highWatermark")
    .message("cache.memoryPressure.lowWatermark must not exceed highWatermark"))]
pub struct MemoryPressureSpec {
    /// Fraction of the memory limit above which the cache shrinks, in (0, 1].
    #[serde(default = "default_high_watermark")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub high_watermark: f64,

    /// Fraction of the memory limit the shrink aims for, in (0, 1].
    #[serde(default = "default_low_watermark")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub low_watermark: f64,

    /// Seconds between memory readings.
    #[serde(default = "default_check_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub check_seconds: i32,
}

impl Default for MemoryPressureSpec {
    fn default() -> Self {
        Self {
            high_watermark: default_high_watermark(),
            low_watermark: default_low_watermark(),
            check_seconds: default_check_seconds(),
        }
    }
}

fn default_high_watermark() -> f64 {
    0.9
}
fn default_low_watermark() -> f64 {
    0.8
}
fn default_check_seconds() -> i32 {
    5
}

/// A PersistentVolumeClaim per agent for the cache: the agent snapshots its entries
/// (and the semantic index) there periodically and when it drains, and loads them at
/// start.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Keep the cache on a volume.
    #[serde(default)]
    pub enabled: bool,

    /// Size of each agent's volume, for example `1Gi`.
    #[serde(default = "default_volume_size")]
    pub volume_size: Quantity,

    /// StorageClass of the volumes; unset uses the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Seconds between snapshots (one more is written when the agent drains).
    #[serde(default = "default_snapshot_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub snapshot_seconds: i32,
}

fn default_snapshot_seconds() -> i32 {
    300
}

impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            volume_size: default_volume_size(),
            storage_class_name: None,
            snapshot_seconds: default_snapshot_seconds(),
        }
    }
}

fn default_volume_size() -> Quantity {
    Quantity("1Gi".to_owned())
}
