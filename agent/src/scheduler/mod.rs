//! Admission and batching: a bounded priority queue in front of the engine.

pub mod adaptive;
pub mod batcher;
pub mod blocks;
pub mod config;
pub mod embed_batcher;
pub mod queue;
mod sequence;
pub mod strategy;
