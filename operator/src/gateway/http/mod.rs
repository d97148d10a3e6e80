//! The gateway's front door on hyper: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN over
//! TLS) on one port, with bounded everything (see `limits`): header, body, idle and write
//! timeouts, header and body sizes, a cap on connections, and a shutdown that ends within
//! its grace however stuck the clients are. Serves any axum router; protocol parsing is
//! hyper's.

pub mod activity;
pub mod body;
pub mod connection;
pub mod limits;
pub mod server;
pub mod tls;
