use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How an agent groups queued requests into batches for the model.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// `continuous` admits and retires sequences at every decode step (best for chat);
    /// `static` waits for a full batch; `dynamic` runs a batch when it is full or
    /// `maxWaitMilliseconds` passed; `adaptive` is dynamic with the batch size and the wait
    /// steered online towards `targetTimePerTokenMilliseconds` and
    /// `targetTimeToFirstTokenMilliseconds` from what the agent measures.
    #[serde(default)]
    pub strategy: BatchingStrategy,

    /// Most sequences decoded together in one step.
    #[serde(default = "default_max_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_batch_size: i32,

    /// Most tokens (prompt and generated) processed in one step across the batch; long
    /// prompts are prefilled in chunks so that they fit.
    #[serde(default = "default_max_batch_tokens")]
    #[schemars(range(min = 16, max = 1048576))]
    pub max_batch_tokens: i32,

    /// Longest a request waits for a batch to fill (`static`, `dynamic` and `adaptive`), in
    /// milliseconds.
    #[serde(default = "default_max_wait_ms")]
    #[schemars(range(min = 0, max = 60000))]
    pub max_wait_milliseconds: i32,

    /// How sequences of different lengths share a batch.
    #[serde(default)]
    pub padding: PaddingStrategy,

    /// Most requests waiting in the agent's queue per priority; beyond it the agent answers
    /// 429 and the gateway tries another agent.
    #[serde(default)]
    pub queue_limits: QueueLimits,

    /// Seconds after which a waiting request rises one priority class, so that steady
    /// urgent traffic delays `low` requests by at most three such periods; 0 turns aging
    /// off (strict priority).
    #[serde(default = "default_aging_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub aging_seconds: i32,

    /// Keep the KV-cache blocks of prompts for later requests that start with the same
    /// tokens (a shared system prompt, earlier turns of a conversation), so that those
    /// tokens are not prefilled again. Cached blocks live in the free part of the KV
    /// budget and are evicted, least recently used first, whenever a request needs room.
    #[serde(default = "default_prefix_caching")]
    pub prefix_caching: bool,

    /// The element type of the KV cache: `f16` (half the memory of `f32`, and half the
    /// bytes attention reads per token at long contexts) or `f32` (exactly what the model
    /// computed). The agent's KV budget holds twice as many tokens in `f16`.
    #[serde(default)]
    pub kv_cache_dtype: KvCacheDtype,

    /// `adaptive` only: the time to first token to keep under, in milliseconds (0: none).
    /// Over it the batching wait halves; well under it the wait grows back towards
    /// `maxWaitMilliseconds`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 600000))]
    pub target_time_to_first_token_milliseconds: i32,

    /// `adaptive` only: the time per output token (one decoding step) to keep under, in
    /// milliseconds (0: none). Over it the admitted batch size halves; well
    /// under it, with the batch full, it grows by one, up to `maxBatchSize`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 60000))]
    pub target_time_per_token_milliseconds: i32,
}

impl Default for BatchingSpec {
    fn default() -> Self {
        Self {
            strategy: BatchingStrategy::default(),
            max_batch_size: default_max_batch_size(),
            max_batch_tokens: default_max_batch_tokens(),
            max_wait_milliseconds: default_max_wait_ms(),
            padding: PaddingStrategy::default(),
            queue_limits: QueueLimits::default(),
            aging_seconds: default_aging_seconds(),
            prefix_caching: default_prefix_caching(),
            kv_cache_dtype: KvCacheDtype::default(),
            target_time_to_first_token_milliseconds: 0,
            target_time_per_token_milliseconds: 0,
        }
    }
}

fn default_prefix_caching() -> bool {
    true
}

fn default_aging_seconds() -> i32 {
    30
}

fn default_max_batch_size() -> i32 {
    16
}
fn default_max_batch_tokens() -> i32 {
    4096
}
fn default_max_wait_ms() -> i32 {
    10
}

/// When a batch runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchingStrategy {
    /// Run only full batches (or at the wait limit).
    Static,
    /// Run when full or when the oldest request waited `maxWaitMilliseconds`.
    Dynamic,
    /// Dynamic, with the wait tuned to the arrival rate.
    Adaptive,
    /// Iteration-level scheduling: join and leave the batch at every step.
    #[default]
    Continuous,
}

/// The element type of cached keys and values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KvCacheDtype {
    /// Half precision.
    #[default]
    F16,
    /// Single precision.
    F32,
}

/// How sequences of different lengths share a batch.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PaddingStrategy {
    /// No padding: each sequence keeps its own length and position.
    #[default]
    None,
    /// Pad every sequence to the longest in the batch.
    Longest,
    /// Pad to the next power-of-two bucket, so that few distinct shapes run.
    Bucket,
}

/// Most requests waiting in an agent's queue for each priority
/// (`x-inferpool-priority` header).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueLimits {
    /// Limit for `critical` requests.
    #[serde(default = "default_limit_critical")]
    #[schemars(range(min = 0, max = 100000))]
    pub critical: i32,
    /// Limit for `high` requests.
    #[serde(default = "default_limit_high")]
    #[schemars(range(min = 0, max = 100000))]
    pub high: i32,
    /// Limit for `normal` requests (the default priority).
    #[serde(default = "default_limit_normal")]
    #[schemars(range(min = 0, max = 100000))]
    pub normal: i32,
    /// Limit for `low` requests.
    #[serde(default = "default_limit_low")]
    #[schemars(range(min = 0, max = 100000))]
    pub low: i32,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            critical: default_limit_critical(),
            high: default_limit_high(),
            normal: default_limit_normal(),
            low: default_limit_low(),
        }
    }
}

fn default_limit_critical() -> i32 {
    64
}
fn default_limit_high() -> i32 {
    128
}
fn default_limit_normal() -> i32 {
    256
}
fn default_limit_low() -> i32 {
    128
}
