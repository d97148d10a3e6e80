//! How the gateway connects to an agent's gRPC port: one lazily connected tonic `Channel`
//! per agent (HTTP/2 multiplexes every call on one connection; tonic reconnects when it
//! breaks), with the timeouts and keep-alive of `UpstreamSettings`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use inferpool_protocol::tls::{DEFAULT_SERVER_NAME, TlsError};
use tonic::transport::{Channel, Endpoint};

use super::tls::UpstreamTls;

/// Flow-control windows: large enough that answers never wait for window updates.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Timeouts, liveness checks and TLS of the links to the agents.
#[derive(Debug, Clone)]
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
    /// TLS, when the agents serve it.
    pub tls: Option<Arc<UpstreamTls>>,
}

/// Settings are the same when their timeouts are and they share one TLS setup (settings
/// made once and cloned): the whole-answer client keeps its pool while they are.
impl PartialEq for UpstreamSettings {
    fn eq(&self, other: &Self) -> bool {
        let same_tls = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_tls
            && (self.connect_timeout, self.request_timeout)
                == (other.connect_timeout, other.request_timeout)
            && (self.keep_alive_interval, self.keep_alive_timeout)
                == (other.keep_alive_interval, other.keep_alive_timeout)
    }
}

impl Eq for UpstreamSettings {}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamFlags::default().timeouts()
    }
}

/// The agent links' timeouts and TLS as flags (and chart values, `gateway.upstream` and
/// `agentTLS`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
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
    /// Dial the agents over TLS, trusting only this directory's `ca.crt` and presenting its
    /// `tls.crt` and `tls.key` when it holds them (for agents that require mutual TLS): a
    /// mounted Secret of type kubernetes.io/tls with the CA beside.
    #[arg(long, env = "INFERPOOL_UPSTREAM_TLS_DIR")]
    pub upstream_tls_dir: Option<PathBuf>,
    /// The name verified in the agents' certificates (a DNS subject alternative name they
    /// must carry): agents are dialled by pod address.
    #[arg(long, default_value = DEFAULT_SERVER_NAME)]
    pub upstream_tls_server_name: String,
}

impl Default for UpstreamFlags {
    fn default() -> Self {
        Self {
            upstream_connect_timeout_ms: 1000,
            upstream_request_timeout_seconds: 600,
            upstream_keep_alive_interval_ms: 2000,
            upstream_keep_alive_timeout_ms: 2000,
            upstream_tls_dir: None,
            upstream_tls_server_name: DEFAULT_SERVER_NAME.to_owned(),
        }
    }
}

impl UpstreamFlags {
    /// The settings, with TLS read from its directory when one is given.
    pub fn settings(&self) -> Result<UpstreamSettings, TlsError> {
        let tls = self
            .upstream_tls_dir
            .as_deref()
            .map(|dir| UpstreamTls::new(dir, &self.upstream_tls_server_name))
            .transpose()?;
        Ok(UpstreamSettings {
            tls: tls.map(Arc::new),
            ..self.timeouts()
        })
    }

    /// The settings without TLS; a 0 would fail every call at once, so each is at least
    /// 1 ms (1 s).
    fn timeouts(&self) -> UpstreamSettings {
        let ms = |n: u64| Duration::from_millis(n.max(1));
        UpstreamSettings {
            connect_timeout: ms(self.upstream_connect_timeout_ms),
            request_timeout: Duration::from_secs(self.upstream_request_timeout_seconds.max(1)),
            keep_alive_interval: ms(self.upstream_keep_alive_interval_ms),
            keep_alive_timeout: ms(self.upstream_keep_alive_timeout_ms),
            tls: None,
        }
    }
}

/// A channel to the agent at `addr` (over TLS when `s` says so); it connects on first use.
pub fn agent_channel(
    addr: SocketAddr,
    s: &UpstreamSettings,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if s.tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(s.connect_timeout)
        .timeout(s.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(s.keep_alive_interval)
        .keep_alive_timeout(s.keep_alive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    let endpoint = match &s.tls {
        Some(tls) => endpoint.tls_config(tls.grpc.clone())?,
        None => endpoint,
    };
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
        .map(|c| c.upstream.timeouts());
        let fast = fast.ok();
        assert_eq!(
            fast.as_ref().map(|s| s.keep_alive_timeout),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            fast.map(|s| s.connect_timeout),
            Some(Duration::from_millis(1))
        );
    }
}
