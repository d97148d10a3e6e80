//! `agent.json`: what the operator tells an agent about its pool (rendered into the pool's
//! ConfigMap), plus the process settings that only the command line gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::load::ModelFormat;
use crate::scheduler::batcher::BatcherConfig;
use crate::scheduler::queue::Priority;
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
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            strategy: Strategy::Continuous,
            max_batch_size: 16,
            max_batch_tokens: 4096,
            max_wait_milliseconds: 10,
            queue_limits: QueueLimits::default(),
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
                "maxWaitMilliseconds": 5, "padding": "none",
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
    }
}
