//! The agent's API ports over TLS (`--tls-dir`, optionally `--tls-mutual`): the HTTP port
//! through a listener that handshakes accepted connections side by side (a client that
//! stalls its handshake holds only its own task, and only for `HANDSHAKE`; at most
//! `HANDSHAKES` at once), the gRPC port through tonic's own TLS with the same files (its
//! handshakes time out after `HANDSHAKE` too, but tonic does not cap how many run at
//! once; the port admits only the gateway and controller pods under the NetworkPolicy).
//! The files are read at start: a renewed certificate takes effect at the next restart. Under mutual TLS both ports refuse a
//! client without a certificate signed by the directory's CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inferpool_protocol::tls::{TlsDir, TlsError, read, server_config};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Longest a TLS handshake may take.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const HANDSHAKES: usize = 256;
/// Handshaken connections waiting for the server to take them.
const READY: usize = 64;
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The API ports' TLS settings.
#[derive(Clone)]
pub struct AgentTls {
    dir: TlsDir,
    mutual: bool,
    http: TlsAcceptor,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field("dir", &self.dir)
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl AgentTls {
    /// TLS with `dir`'s certificate; with `mutual`, clients must present one `dir`'s CA
    /// signed.
    pub fn new(dir: &Path, mutual: bool) -> Result<Self, TlsError> {
        let dir = TlsDir(dir.to_owned());
        let ca = dir.ca();
        let config = server_config(&dir.cert(), &dir.key(), mutual.then_some(ca.as_path()))?;
        Ok(Self {
            dir,
            mutual,
            http: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// tonic's TLS settings for the gRPC port, from the same files.
    pub fn grpc(&self) -> Result<ServerTlsConfig, TlsError> {
        let identity = Identity::from_pem(read(&self.dir.cert())?, read(&self.dir.key())?);
        let config = ServerTlsConfig::new().identity(identity).timeout(HANDSHAKE);
        Ok(match self.mutual {
            true => config.client_ca_root(Certificate::from_pem(read(&self.dir.ca())?)),
            false => config,
        })
    }

    /// A listener serving `listener`'s connections once their handshake is done.
    pub fn listen(&self, listener: TcpListener) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        let (ready, taken) = mpsc::channel(READY);
        let accepting = tokio::spawn(accept(listener, self.http.clone(), ready));
        Ok(TlsListener {
            addr,
            taken,
            accepting,
        })
    }
}

/// Handshaken connections for axum; the accept loop ends with it.
#[derive(Debug)]
pub struct TlsListener {
    addr: SocketAddr,
    taken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.taken.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Accepts connections and hands each, once handshaken, to `ready`.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(tls) = handshake(&acceptor, tcp).await {
                let _ = ready.send((tls, peer)).await;
            }
        });
    }
}

async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}
