//! `agent.json`: what the operator tells an agent about its pool (rendered into the pool's
//! ConfigMap), plus the process settings that only the command line gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::cache_config::CacheConfig;
use crate::cache_config::CacheConfigError;
pub use crate::device_config::DeviceConfig;
use crate::engine::kv::KvCacheDtype;
use crate::engine::load::ModelFormat;
use crate::engine::rows::Padding;
use crate::generation::Priority;
use crate::scheduler::adaptive::SloTargets;
use crate::scheduler::batcher::BatcherConfig;
pub use crate::scheduler::strategy::Strategy;

/// The pool's settings for this agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentConfig {
    /// The name clients send as `model`.
    pub served_name: String,
    /// A GGUF file or a safetensors checkpoint directory.
    pub model_path: PathBuf,
    /// How the model is stored.
    #[serde(default)]
    pub model_format: ModelFormat,
    /// A chat template overriding the model's own.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// GPUs the pool asked for (0: CPU).
    #[serde(default)]
    pub gpus: u32,
    /// Batching settings.
    #[serde(default)]
    pub batching: Batching,
    /// HTTP port (OpenAI API, health, metrics).
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// gRPC port (the gateway's `Agent` service, grpc.health.v1).
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// The response cache (`spec.cache` of the pool).
    #[serde(default)]
    pub cache: CacheConfig,
    /// How the node's devices are split, watched and retried.
    #[serde(default)]
    pub devices: DeviceConfig,
    /// Where the cache's snapshot lives when `cache.persistence` is on (the pod's cache
    /// volume; a directory of its own per local agent).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

fn default_http_port() -> u16 {
    8080
}
fn default_grpc_port() -> u16 {
    50051
}

/// How requests are batched (`spec.batching` of the pool).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Batching {
    /// When a batch runs.
    pub strategy: Strategy,
    /// Most sequences decoded together.
    pub max_batch_size: usize,
    /// Most tokens per step.
    pub max_batch_tokens: usize,
    /// Longest a request waits for a batch to fill (not `continuous`).
    pub max_wait_milliseconds: u64,
    /// Queue limits per priority.
    pub queue_limits: QueueLimits,
    /// Seconds after which a waiting request rises one priority class (0: never).
    pub aging_seconds: u64,
    /// Keep prompts' KV blocks for requests that start with the same tokens.
    pub prefix_caching: bool,
    /// The element type of cached keys and values.
    pub kv_cache_dtype: KvCacheDtype,
    /// How the rows of a step are padded.
    pub padding: Padding,
    /// `adaptive`'s time-to-first-token target (0: none).
    pub target_time_to_first_token_milliseconds: u64,
    /// `adaptive`'s time-per-output-token target (0: none).
    pub target_time_per_token_milliseconds: u64,
}

impl Batching {
    fn slo_targets(&self) -> SloTargets {
        let target = |ms: u64| (ms > 0).then(|| std::time::Duration::from_millis(ms));
        SloTargets {
            ttft: target(self.target_time_to_first_token_milliseconds),
            time_per_token: target(self.target_time_per_token_milliseconds),
        }
    }
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            strategy: Strategy::Continuous,
            max_batch_size: 16,
            max_batch_tokens: 4096,
            max_wait_milliseconds: 10,
            queue_limits: QueueLimits::default(),
            aging_seconds: 30,
            prefix_caching: true,
            kv_cache_dtype: KvCacheDtype::F16,
            padding: Padding::None,
            target_time_to_first_token_milliseconds: 0,
            target_time_per_token_milliseconds: 0,
        }
    }
}

/// Most waiting requests per priority.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct QueueLimits {
    /// `critical`.
    pub critical: usize,
    /// `high`.
    pub high: usize,
    /// `normal`.
    pub normal: usize,
    /// `low`.
    pub low: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            critical: 64,
            high: 128,
            normal: 256,
            low: 128,
        }
    }
}

impl QueueLimits {
    /// In `Priority::ALL` order.
    pub fn as_array(&self) -> [usize; 4] {
        Priority::ALL.map(|p| match p {
            Priority::Critical => self.critical,
            Priority::High => self.high,
            Priority::Normal => self.normal,
            Priority::Low => self.low,
        })
    }
}

/// Why `agent.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The cache's settings do not hold together.
    #[error(transparent)]
    Cache(#[from] CacheConfigError),
    /// Not the expected JSON.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        source: serde_json::Error,
    },
}

impl AgentConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let name = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: name(),
            source,
        })
    }

    /// The engine loop's limits, with `kv_blocks` from the memory budget.
    pub fn batcher(&self, kv_blocks: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch_size: self.batching.max_batch_size.max(1),
            max_batch_tokens: self.batching.max_batch_tokens.max(16),
            queue_limits: self.batching.queue_limits.as_array(),
            kv_blocks,
            strategy: self.batching.strategy,
            max_wait: std::time::Duration::from_millis(self.batching.max_wait_milliseconds),
            aging: std::time::Duration::from_secs(self.batching.aging_seconds),
            prefix_caching: self.batching.prefix_caching,
            kv_dtype: self.batching.kv_cache_dtype,
            slo: self.batching.slo_targets(),
            padding: self.batching.padding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c: AgentConfig =
            serde_json::from_str(r#"{"servedName": "m", "modelPath": "/m.gguf"}"#).unwrap();
        assert_eq!((c.http_port, c.grpc_port, c.gpus), (8080, 50051, 0));
        assert_eq!(c.batching.strategy, Strategy::Continuous);
        assert_eq!(c.batcher(10).queue_limits, [64, 128, 256, 128]);
    }

    #[test]
    fn the_operators_fields_are_read() {
        let c: AgentConfig = serde_json::from_value(serde_json::json!({
            "servedName": "m", "modelPath": "/d", "modelFormat": "safetensors",
            "chatTemplate": "{{x}}", "gpus": 1, "httpPort": 1, "grpcPort": 2,
            "batching": {"strategy": "dynamic", "maxBatchSize": 4, "maxBatchTokens": 64,
                "maxWaitMilliseconds": 5, "padding": "bucket", "agingSeconds": 9, "prefixCaching": false,
                "targetTimeToFirstTokenMilliseconds": 500, "targetTimePerTokenMilliseconds": 40,
                "queueLimits": {"critical": 1, "high": 2, "normal": 3, "low": 4}},
            "cache": {"enabled": true}
        }))
        .unwrap();
        assert_eq!(c.model_format, ModelFormat::Safetensors);
        assert_eq!(c.batching.strategy, Strategy::Dynamic);
        let b = c.batcher(7);
        assert_eq!(
            (b.max_batch_size, b.max_batch_tokens, b.kv_blocks),
            (4, 64, 7)
        );
        assert_eq!(b.queue_limits, [1, 2, 3, 4]);
        assert_eq!(b.aging, std::time::Duration::from_secs(9));
        assert!(!b.prefix_caching);
        assert_eq!(b.padding, Padding::Bucket);
        assert_eq!(
            b.slo.time_per_token,
            Some(std::time::Duration::from_millis(40))
        );
        assert_eq!(b.slo.ttft, Some(std::time::Duration::from_millis(500)));
    }
}
