//! The gateway: the pools' OpenAI front door. The core (breaker, pickers, the pool's view
//! of its agents) is plain Rust tested with plain values; discovery, gRPC and HTTP are thin
//! adapters around it.

pub mod agents;
pub mod breaker;
pub mod checks;
pub mod chunked;
pub mod connection;
pub mod discovery;
pub mod embed;
#[cfg(test)]
mod failover;
pub mod forward;
pub mod front;
pub mod http1;
pub mod metrics;
pub mod pick;
pub mod pool;
pub mod relay;
pub mod reply;
pub mod retry;
pub mod server;
pub mod stream;
pub mod unary;
pub mod workers;
