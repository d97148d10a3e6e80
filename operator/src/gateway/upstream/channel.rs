//! How the gateway connects to an agent's gRPC port: one lazily connected tonic `Channel`
//! per agent (HTTP/2 multiplexes every call on one connection; tonic reconnects when it
//! breaks), with the timeouts and keep-alive of `UpstreamSettings`.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Flow-control windows: large enough that answers never wait for window updates.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Timeouts and liveness checks of the links to the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Longest a connection attempt may take (an agent that is gone is refused at once on
    /// a live node; a dead node answers nothing).
    pub connect_timeout: Duration,
    /// Longest any one call may wait for its answer's head, whatever its deadline.
    pub request_timeout: Duration,
    /// How often an HTTP/2 PING checks a connection, idle or not.
    pub keep_alive_interval: Duration,
    /// How long a PING may go unanswered before the connection is taken as dead (its
    /// calls fail, and the agent's load stream with them).
    pub keep_alive_timeout: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(600),
            keep_alive_interval: Duration::from_secs(2),
            keep_alive_timeout: Duration::from_secs(2),
        }
    }
}

/// A channel to the agent at `addr`; it connects on first use.
pub fn agent_channel(
    addr: SocketAddr,
    s: &UpstreamSettings,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(s.connect_timeout)
        .timeout(s.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(s.keep_alive_interval)
        .keep_alive_timeout(s.keep_alive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    Ok(endpoint.connect_lazy())
}
