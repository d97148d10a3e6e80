//! One request inside the engine loop: its tokens so far, its sampler and its share of the
//! KV-cache blocks. A preempted sequence gives its blocks back and later recomputes its
//! cache from `tokens` (prompt and everything generated), so nothing it streamed is lost
//! or repeated.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::engine::kv::{KvCache, KvCacheDtype};
use crate::engine::sampling::Sampler;
use crate::generation::{GenerationEvent, GenerationRequest, Priority};

/// Tokens a client may leave unread before its sequence pauses.
pub const EVENT_BUFFER: usize = 64;

pub(super) struct Sequence {
    pub request: GenerationRequest,
    pub events: mpsc::Sender<GenerationEvent>,
    pub sampler: Sampler,
    /// The prompt, then every generated token.
    pub tokens: Vec<u32>,
    pub cache: KvCache,
    pub generated: usize,
    /// Admission order: the newest running sequence is preempted first.
    pub admitted: u64,
    /// When it was submitted, for its time to first token.
    pub arrived: Instant,
}

impl Sequence {
    pub fn new(
        request: GenerationRequest,
        events: mpsc::Sender<GenerationEvent>,
        kv_dtype: KvCacheDtype,
    ) -> Self {
        Self {
            sampler: Sampler::new(request.sampling.clone()),
            tokens: request.prompt.clone(),
            request,
            events,
            cache: KvCache::new(kv_dtype),
            generated: 0,
            admitted: 0,
            arrived: Instant::now(),
        }
    }

    /// The channel for one request's events: room for `EVENT_BUFFER` tokens and, always,
    /// the terminal event.
    pub fn event_channel() -> (
        mpsc::Sender<GenerationEvent>,
        mpsc::Receiver<GenerationEvent>,
    ) {
        mpsc::channel(EVENT_BUFFER + 1)
    }

    /// Whether its client is `EVENT_BUFFER` tokens behind: it sits out steps, keeping its
    /// blocks, until the client reads, so that a slow reader never holds up the batch.
    /// Stepping only with two free slots leaves one for the terminal event, whatever
    /// happens in the step.
    pub fn paused(&self) -> bool {
        self.events.capacity() < 2
    }

    /// Resolves once the client has made room to step again, or left.
    pub async fn room(&self) {
        let _room = self.events.reserve_many(2).await;
    }

    /// Tokens not yet in the cache.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.cache.len()
    }

    /// Whether it is past its prompt, feeding back one sampled token per step.
    pub fn decoding(&self) -> bool {
        self.generated > 0 && self.pending() == 1
    }

    /// Whether the client went away.
    pub fn cancelled(&self) -> bool {
        self.events.is_closed()
    }

    /// Whether its deadline passed by `now`; if so, tells its client (a queued sequence
    /// leaves the queue with this).
    /// A preempted sequence (it has streamed tokens) never expires: it finishes what the
    /// client already has part of.
    pub fn expire(&self, now: Instant) -> bool {
        let expired = !self.resuming() && self.request.deadline.is_some_and(|d| d <= now);
        if expired {
            let _ = self.events.try_send(GenerationEvent::Expired);
        }
        expired
    }

    /// Whether it ran before and was preempted: it resumes before new requests are gated.
    pub fn resuming(&self) -> bool {
        self.admitted != 0
    }

    /// Preemption order: lower priority first, then the most recently admitted.
    pub fn preemption_key(&self) -> (Priority, u64) {
        (self.request.priority, self.admitted)
    }
}
