//! inferpool agent: the process in every pool pod. It discovers the node's devices, loads
//! the pool's model, batches requests through one engine loop and serves them over HTTP
//! (OpenAI-compatible) and gRPC (the gateway's `Agent` service).

pub mod cache;
pub mod cache_config;
pub mod config;
pub mod device_config;
pub mod engine;
pub mod generation;
pub mod gpu;
pub mod replicas;
pub mod scheduler;
pub mod server;
pub mod serving;
