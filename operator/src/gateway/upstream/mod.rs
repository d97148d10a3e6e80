//! Clients of the agents, on two standard stacks: a tonic `Channel` per agent for the gRPC
//! calls (`Generate` streams, `Embed`, the `WatchLoad` load reports), and hyper's pooled
//! client for whole answers from the agent's own HTTP API. Each has a connect timeout, a
//! request timeout (the request's own deadline) and liveness checks: HTTP/2 PINGs on the
//! channel, so a frozen agent is noticed within seconds rather than at a deadline.

pub mod channel;
pub mod details;
pub mod generate;
pub mod load;
pub mod tls;
pub mod whole;
