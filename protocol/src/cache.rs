//! The headers of the agents' response cache, shared by the agent and the gateway.

/// How the response cache took part in an answer: `exact`, `semantic` or `miss`.
pub const CACHE_HEADER: &str = "x-inferpool-cache";

/// The request header whose `no-cache`, `no-store` and `max-age` the cache obeys.
pub const CACHE_CONTROL: &str = "cache-control";
