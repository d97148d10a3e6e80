//! The front door's limits, as flags with defaults sized for LLM traffic (long streamed
//! answers, small requests): see each flag.

use std::path::PathBuf;
use std::time::Duration;

use inferpool_protocol::limits::MAX_BODY_BYTES;

/// Limits and TLS of the gateway's HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HttpSettings {
    /// Longest a client may take to send a request head (and, on a new connection, its
    /// first bytes or its TLS handshake).
    #[arg(long, default_value_t = 10)]
    pub header_read_timeout_seconds: u64,
    /// Longest a client may take to send a request body.
    #[arg(long, default_value_t = 30)]
    pub body_read_timeout_seconds: u64,
    /// Longest a connection may stay open with no request in flight.
    #[arg(long, default_value_t = 60)]
    pub idle_timeout_seconds: u64,
    /// Longest a write may wait for a client that stops reading.
    #[arg(long, default_value_t = 30)]
    pub write_timeout_seconds: u64,
    /// Most connections served at once; beyond it new ones are closed at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes (431 beyond).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most header lines in a request (431 beyond).
    #[arg(long, default_value_t = 100)]
    pub max_headers: usize,
    /// Largest request body, in bytes (413 beyond). The default is the agent's own limit,
    /// so that a body the gateway takes by default is one the agent takes too.
    #[arg(long, default_value_t = MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// On shutdown, how long requests in flight may take to finish before their
    /// connections are closed.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// TLS certificate chain (PEM); with `--tls-key`, the port serves TLS only (ALPN h2
    /// and http/1.1).
    #[arg(long, requires = "tls_key", env = "INFERPOOL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert", env = "INFERPOOL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            write_timeout_seconds: 30,
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: MAX_BODY_BYTES,
            shutdown_grace_seconds: 30,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpSettings {
    /// See `header_read_timeout_seconds`.
    pub fn header_read_timeout(&self) -> Duration {
        seconds(self.header_read_timeout_seconds)
    }

    /// See `body_read_timeout_seconds`.
    pub fn body_read_timeout(&self) -> Duration {
        seconds(self.body_read_timeout_seconds)
    }

    /// See `idle_timeout_seconds`.
    pub fn idle_timeout(&self) -> Duration {
        seconds(self.idle_timeout_seconds)
    }

    /// See `write_timeout_seconds`.
    pub fn write_timeout(&self) -> Duration {
        seconds(self.write_timeout_seconds)
    }

    /// See `shutdown_grace_seconds`.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// A timeout of `n` seconds; 0 would close every connection at once, so it is 1 s.
fn seconds(n: u64) -> Duration {
    Duration::from_secs(n.max(1))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        http: HttpSettings,
    }

    #[test]
    fn the_flags_defaults_are_the_settings_defaults() {
        let parsed = Cli::try_parse_from(["gateway"]).unwrap();
        assert_eq!(parsed.http, HttpSettings::default());
        let parsed = Cli::try_parse_from(["gateway", "--tls-cert", "c.pem"]);
        assert!(parsed.is_err(), "a certificate needs its key");
    }
}
