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
        UpstreamFlags::default().settings()
    }
}

/// The agent links' timeouts as flags (and chart values, `gateway.upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct UpstreamFlags {
    /// Longest a connection attempt to an agent may take, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub upstream_connect_timeout_ms: u64,
    /// Longest any one call to an agent may wait for its answer's head, in seconds
    /// (a request's own deadline is usually shorter).
    #[arg(long, default_value_t = 600)]
    pub upstream_request_timeout_seconds: u64,
    /// How often an HTTP/2 PING checks each agent link, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub upstream_keep_alive_interval_ms: u64,
    /// How long a PING may go unanswered before the link (and every call on it) is taken
    /// as dead, in milliseconds: how soon a frozen agent is noticed.
    #[arg(long, default_value_t = 2000)]
    pub upstream_keep_alive_timeout_ms: u64,
}

impl Default for UpstreamFlags {
    fn default() -> Self {
        Self {
            upstream_connect_timeout_ms: 1000,
            upstream_request_timeout_seconds: 600,
            upstream_keep_alive_interval_ms: 2000,
            upstream_keep_alive_timeout_ms: 2000,
        }
    }
}

impl UpstreamFlags {
    /// The settings; a 0 would fail every call at once, so each is at least 1 ms (1 s).
    pub fn settings(&self) -> UpstreamSettings {
        let ms = |n: u64| Duration::from_millis(n.max(1));
        UpstreamSettings {
            connect_timeout: ms(self.upstream_connect_timeout_ms),
            request_timeout: Duration::from_secs(self.upstream_request_timeout_seconds.max(1)),
            keep_alive_interval: ms(self.upstream_keep_alive_interval_ms),
            keep_alive_timeout: ms(self.upstream_keep_alive_timeout_ms),
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        upstream: UpstreamFlags,
    }

    #[test]
    fn flags_default_to_the_defaults_and_parse() {
        let parsed = Cli::try_parse_from(["gateway"]).map(|c| c.upstream);
        assert_eq!(parsed.ok(), Some(UpstreamFlags::default()));
        let fast = Cli::try_parse_from([
            "gateway",
            "--upstream-keep-alive-timeout-ms=500",
            "--upstream-connect-timeout-ms=0",
        ])
        .map(|c| c.upstream.settings());
        let fast = fast.ok();
        assert_eq!(
            fast.map(|s| s.keep_alive_timeout),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            fast.map(|s| s.connect_timeout),
            Some(Duration::from_millis(1))
        );
    }
}
