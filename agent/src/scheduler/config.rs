//! The engine loop's limits, what it publishes, and how a submission is refused: plain
//! types shared by the loop and its callers.

use std::time::Duration;

use super::adaptive::SloTargets;
use super::blocks::PrefixStats;
use super::queue::QueueFull;
use super::strategy::Strategy;
use crate::engine::kv::KvCacheDtype;
use crate::engine::rows::Padding;

/// Limits of the loop.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most sequences decoded together.
    pub max_batch_size: usize,
    /// Most tokens per step across the batch.
    pub max_batch_tokens: usize,
    /// Queue limit per priority, in `Priority::ALL` order.
    pub queue_limits: [usize; 4],
    /// KV-cache blocks (of `kv::BLOCK_SIZE` tokens) the engine may hold.
    pub kv_blocks: usize,
    /// When waiting requests join the batch.
    pub strategy: Strategy,
    /// The strategy's wait limit.
    pub max_wait: Duration,
    /// Wait after which a queued request rises one priority class (zero: never).
    pub aging: Duration,
    /// Keep prompts' full KV blocks in the free part of the budget for later requests
    /// that start with the same tokens (`engine::prefix`).
    pub prefix_caching: bool,
    /// The element type of every sequence's cached keys and values.
    pub kv_dtype: KvCacheDtype,
    /// What `adaptive` steers the batch size and the wait towards.
    pub slo: SloTargets,
    /// How the rows of a step are padded.
    pub padding: Padding,
}

/// The engine's load, published after every iteration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Sequences in the running batch.
    pub running: usize,
    /// Waiting requests per priority.
    pub queued: [usize; 4],
    /// KV-cache blocks held by sequences.
    pub kv_blocks_used: usize,
    /// KV-cache blocks in the budget.
    pub kv_blocks_total: usize,
    /// Sequences preempted since start.
    pub preemptions: u64,
    /// Prefix reuse since start.
    pub prefix: PrefixStats,
    /// Sequences that may run together now (`adaptive` moves it; otherwise the maximum).
    pub batch_limit: usize,
    /// `adaptive`'s measured time per output token (moving average), once measured.
    pub time_per_token: Option<Duration>,
}

impl Load {
    /// Requests waiting, all priorities.
    pub fn waiting(&self) -> usize {
        self.queued.iter().sum()
    }

    /// The load of several engines together: sums, and the slowest time per token.
    pub fn sum(loads: impl IntoIterator<Item = Load>) -> Load {
        loads.into_iter().fold(Load::default(), |a, b| Load {
            running: a.running + b.running,
            queued: [0, 1, 2, 3].map(|i| a.queued[i] + b.queued[i]),
            kv_blocks_used: a.kv_blocks_used + b.kv_blocks_used,
            kv_blocks_total: a.kv_blocks_total + b.kv_blocks_total,
            preemptions: a.preemptions + b.preemptions,
            prefix: PrefixStats {
                queried_tokens: a.prefix.queried_tokens + b.prefix.queried_tokens,
                hit_tokens: a.prefix.hit_tokens + b.prefix.hit_tokens,
                cached_blocks: a.prefix.cached_blocks + b.prefix.cached_blocks,
            },
            batch_limit: a.batch_limit + b.batch_limit,
            time_per_token: a.time_per_token.max(b.time_per_token),
        })
    }

    /// Fraction of the KV budget in use, 0..=1.
    pub fn kv_usage(&self) -> f64 {
        self.kv_blocks_used as f64 / self.kv_blocks_total.max(1) as f64
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Its priority's queue is full.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// Its prompt and `max_tokens` together need more KV-cache blocks than the engine has,
    /// so it could never finish, however long it waited.
    #[error("{tokens} tokens (prompt and max_tokens) exceed the KV cache of {capacity} tokens")]
    TooLarge {
        /// Prompt plus `max_tokens`.
        tokens: usize,
        /// Tokens the whole KV budget holds.
        capacity: usize,
    },
    /// The engine loop has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// Every device is failed or recovering.
    #[error("no healthy device is left to run the model")]
    NoHealthyDevice,
}
