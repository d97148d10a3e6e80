//! Dispatch: a pool at run time (its agents' links and the requests' slots on them), and
//! sending one request to it: pick an agent, hold its slot, try, and retry before the first
//! token as the core's policy allows. Streams, whole answers and embeddings differ only in
//! what one try is.

pub mod embed;
#[cfg(test)]
mod failover_tests;
pub mod gateway;
pub mod held;
#[cfg(test)]
mod held_tests;
pub mod pool;
pub mod stream;
pub mod tries;
pub mod verdict;
pub mod whole;
