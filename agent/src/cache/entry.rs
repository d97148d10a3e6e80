//! What the cache holds per key: a complete answer (or an embedding model's vector), when
//! it was stored and until when it is good, and, for semantic matching, the embedding of
//! the turn it answered. Times are Unix milliseconds so that a snapshot keeps them across
//! restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::generation::FinishReason;

/// A complete answer as it was streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// Text deltas with the token ids behind each.
    pub chunks: Vec<(String, Vec<u32>)>,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens of the prompt it answered (a hit reports them as usage without tokenizing).
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
}

/// What an entry answers with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// A chat or text completion.
    Answer(CachedAnswer),
    /// One input's embedding, and the tokens it took.
    Vector {
        /// The embedding.
        values: Vec<f32>,
        /// Tokens of the input.
        tokens: u32,
    },
}

impl Payload {
    /// A one-chunk answer of `text`, for tests.
    #[cfg(test)]
    pub fn answer_of(text: &str) -> Self {
        Self::Answer(CachedAnswer {
            chunks: vec![(text.to_owned(), vec![7])],
            finish: FinishReason::Stop,
            prompt_tokens: 3,
            completion_tokens: 1,
        })
    }

    /// Bytes held, roughly (what the capacity counts).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Answer(a) => a
                .chunks
                .iter()
                .map(|(text, ids)| text.len() + ids.len() * 4 + 48)
                .sum(),
            Self::Vector { values, .. } => values.len() * 4,
        }
    }
}

/// One cached answer with its times.
#[derive(Debug)]
pub struct Entry {
    /// The answer.
    pub payload: Payload,
    /// Unique per entry, so that an index forgets only the entry it was told about.
    pub id: u64,
    /// When it was stored.
    pub stored_ms: u64,
    /// When it stops being served.
    pub expires_ms: u64,
    /// The answered turn's embedding, when it can answer semantically.
    pub embedding: Option<Vec<f32>>,
    /// When it was last served, for eviction under memory pressure (least recent first).
    last_used_ms: AtomicU64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Entry {
    /// An entry stored at `stored_ms`, good until `expires_ms`.
    pub fn new(payload: Payload, stored_ms: u64, expires_ms: u64) -> Self {
        Self {
            payload,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stored_ms,
            expires_ms,
            embedding: None,
            last_used_ms: AtomicU64::new(stored_ms),
        }
    }

    /// With the answered turn's embedding.
    pub fn with_embedding(mut self, embedding: Option<Vec<f32>>) -> Self {
        self.embedding = embedding;
        self
    }

    /// Bytes held, roughly.
    pub fn bytes(&self) -> usize {
        self.payload.bytes() + self.embedding.as_ref().map_or(0, |e| e.len() * 4)
    }

    /// How long it is still good at `now_ms`.
    pub fn remaining(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.expires_ms.saturating_sub(now_ms))
    }

    /// Whether its age, in whole seconds as HTTP counts it (RFC 9111 4.2.3), is at most
    /// `max_age`'s at `now_ms`: `max-age=0` takes an answer stored this second.
    pub fn younger_than(&self, max_age: Duration, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.stored_ms) / 1000 <= max_age.as_secs()
    }

    /// Marks it served at `now_ms`.
    pub fn touch(&self, now_ms: u64) {
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When it was last served.
    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An entry as a snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// Its exact key.
    pub key: String,
    /// The answer.
    pub payload: Payload,
    /// When it was stored.
    pub stored_ms: u64,
    /// When it stops being served.
    pub expires_ms: u64,
    /// The answered turn's embedding.
    pub embedding: Option<Vec<f32>>,
}

impl StoredEntry {
    /// `entry` under `key`, as a snapshot keeps it.
    pub fn of(key: &str, entry: &Entry) -> Self {
        Self {
            key: key.to_owned(),
            payload: entry.payload.clone(),
            stored_ms: entry.stored_ms,
            expires_ms: entry.expires_ms,
            embedding: entry.embedding.clone(),
        }
    }

    /// Back into an entry.
    pub fn into_entry(self) -> (String, Entry) {
        let entry = Entry::new(self.payload, self.stored_ms, self.expires_ms)
            .with_embedding(self.embedding);
        (self.key, entry)
    }
}
