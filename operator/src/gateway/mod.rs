//! The gateway: the pools' OpenAI front door, in layers that import only downwards:
//!
//! - `core`: no I/O; the pool view, breakers, pickers, retry budget and policy, and the
//!   route table's contract (tested with plain values);
//! - `metrics`: the gateway's series (plain data, on the core's names);
//! - `upstream`: the agent clients (tonic channels, hyper's pooled client), with their
//!   timeouts and keep-alive;
//! - `dispatch`: pools at run time; pick, hold, retry before the first token;
//! - `api`: the OpenAI handlers and the SSE relay (an axum router);
//! - `http`: the hyper server, its limits, timeouts and TLS;
//! - `runtime`: the router on the server on the bound sockets.
//!
//! `discovery` feeds the route table and depends on the core alone; `auth` (API keys and
//! quotas) depends on nothing of the gateway, and the dispatch layer holds it.

pub mod api;
pub mod auth;
pub mod core;
pub mod discovery;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod runtime;
pub mod upstream;
