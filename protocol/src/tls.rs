//! TLS settings from PEM files (rustls with ring), shared by the gateway's front door,
//! the agents' API ports and the gateway's and controller's links to them. The links read
//! a directory laid out as a Kubernetes TLS Secret with its CA (`tls.crt`, `tls.key`,
//! `ca.crt`, as cert-manager writes it): one Secret is the agents' server identity and,
//! under mutual TLS, the client identity of those that dial them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The name agents' certificates carry (a DNS subject alternative name) unless told
/// otherwise: agents are dialled by pod address, which no shared certificate can name.
pub const DEFAULT_SERVER_NAME: &str = "inferpool-agent";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no certificate or key.
    #[error("reading {path}: {source}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificates or key.
    #[error("TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
    /// The CA file yields no usable trust anchor, or the client verifier could not be made.
    #[error("TLS client verification: {0}")]
    Verifier(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The name to verify in the peer's certificate is not a DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The bytes of the file at `path` (a PEM file handed on to tonic).
pub fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A directory holding `tls.crt`, `tls.key` and `ca.crt` (a mounted Secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsDir(pub PathBuf);

impl TlsDir {
    /// The certificate chain.
    pub fn cert(&self) -> PathBuf {
        self.0.join("tls.crt")
    }

    /// The chain's private key.
    pub fn key(&self) -> PathBuf {
        self.0.join("tls.key")
    }

    /// The CA that signs the peers' certificates.
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca.crt")
    }

    /// Whether it holds a certificate and key to present.
    pub fn has_identity(&self) -> bool {
        self.cert().is_file() && self.key().is_file()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn pem_error(path: &Path) -> impl FnOnce(tokio_rustls::rustls::pki_types::pem::Error) -> TlsError {
    let path = path.display().to_string();
    move |source| TlsError::Pem { path, source }
}

/// Every certificate in the PEM file at `path`.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))
}

/// The first private key in the PEM file at `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(pem_error(path))
}

/// The CA certificates in `path` as trust anchors (none usable is an error).
fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates(path)?);
    if added == 0 {
        return Err(TlsError::Verifier(format!(
            "{} holds no usable CA certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// A server serving the chain in `cert` with the key in `key`, offering HTTP/2 first and
/// HTTP/1.1; with `client_ca`, a client must present a certificate that CA signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots(ca)?.into(), provider())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certificates(cert)?, private_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client that trusts only the CA of `dir` and presents `dir`'s certificate to servers
/// that ask for one (when it holds one). It names no ALPN protocol: the callers set their
/// own (hyper-rustls refuses a config that has one).
pub fn client_config(dir: &TlsDir) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&dir.ca())?);
    if dir.has_identity() {
        Ok(builder.with_client_auth_cert(certificates(&dir.cert())?, private_key(&dir.key())?)?)
    } else {
        Ok(builder.with_no_client_auth())
    }
}
