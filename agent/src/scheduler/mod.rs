//! Admission and batching: a bounded priority queue in front of the engine.

pub mod adaptive;
pub mod batcher;
pub mod blocks;
mod command;
pub mod config;
pub mod embed_batcher;
pub mod faults;
pub mod handle;
pub mod queue;
mod sequence;
mod step;
pub mod strategy;
mod waits;
