//! The response cache: complete answers to reproducible requests (greedy, or sampled with
//! a seed), filed before any template or tokenizer work under the request's scope and last
//! turn (`key`), in one partition per served model with its share of the capacity
//! (`partition`), each entry expiring after the TTL. With semantic matching on, a turn
//! close in meaning to a cached one of the same scope (`semantic`) that passes a lexical
//! check (`verify`) is answered too. Under memory pressure (`pressure`) the least recently
//! served entries go first; a snapshot (`snapshot`) keeps the cache across restarts.

pub mod directives;
pub mod entry;
pub mod fuzzing;
pub mod key;
pub mod normalize;
pub mod partition;
pub mod pressure;
pub mod semantic;
pub mod snapshot;
pub mod store;
pub mod verify;

pub use self::directives::CacheDirectives;
pub use self::entry::{CachedAnswer, Payload};
pub use self::key::PromptKey;
pub use self::store::{
    CacheSettings, CacheStats, Found, ModelId, PartitionSpec, ResponseCache, SemanticSettings,
};
