//! Admission and batching: a bounded priority queue in front of the engine.

pub mod batcher;
pub mod blocks;
pub mod embed_batcher;
pub mod queue;
mod sequence;
pub mod strategy;
