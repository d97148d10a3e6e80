//! inferpool agent: the process in every pool pod. Device discovery and the engine
//! (tokenizer, batched forward) are here; the scheduler, cache and servers land next.

pub mod engine;
pub mod gpu;
pub mod scheduler;
