//! TLS on the links to the agents (`--upstream-tls-dir`): the agents are verified against
//! the directory's CA under one name their certificates carry (they are dialled by pod
//! address, which no shared certificate names), and, when the directory holds a
//! certificate and key, those are presented to agents that require mutual TLS. The same
//! files serve both client stacks: tonic's for the gRPC channels, rustls through
//! hyper-rustls for whole answers.

use std::path::Path;
use std::sync::Arc;

use inferpool_protocol::tls::{TlsDir, TlsError, client_config, read};
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The agent links' TLS settings.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// For the gRPC channels.
    pub grpc: ClientTlsConfig,
    /// For the whole-answer client.
    pub http: Arc<ClientConfig>,
    /// The name verified in every agent's certificate.
    pub server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// The settings from `dir` (`ca.crt`, and `tls.crt`/`tls.key` when present), verifying
    /// agents as `server_name`. Every file is read now, so that a broken Secret stops the
    /// process at start rather than failing each call.
    pub fn new(dir: &Path, server_name: &str) -> Result<Self, TlsError> {
        let dir = TlsDir(dir.to_owned());
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
        let http = Arc::new(client_config(&dir)?);
        let mut grpc = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&dir.ca())?))
            .domain_name(server_name);
        if dir.has_identity() {
            grpc = grpc.identity(Identity::from_pem(read(&dir.cert())?, read(&dir.key())?));
        }
        Ok(Self {
            grpc,
            http,
            server_name: name,
        })
    }
}
