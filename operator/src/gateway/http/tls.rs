//! TLS for the front door through rustls (ring): the certificate chain and key from PEM
//! files, ALPN offering HTTP/2 first and HTTP/1.1 (see `inferpool_protocol::tls`).

use std::path::Path;
use std::sync::Arc;

pub use inferpool_protocol::tls::TlsError;
use tokio_rustls::TlsAcceptor;

/// An acceptor serving the chain in `cert` with the key in `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = inferpool_protocol::tls::server_config(cert, key, None)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
