//! The accept loop: connections up to the cap (beyond it one is closed at once, before
//! anything is read), each served on its own task; on stop, no more accepting, every
//! connection told to finish, and after the grace whatever is left is closed.

use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::connection::{Shared, serve, until_true};
use super::limits::HttpSettings;
use super::tls::{TlsError, acceptor};

/// How often an unanswered HTTP/2 PING checks a client; as long again before it is dead.
const CLIENT_PING: std::time::Duration = std::time::Duration::from_secs(20);

/// A server for `router` with `settings` (not yet listening).
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
}

impl Server {
    /// The server; fails when the TLS files cannot be used.
    pub fn new(router: Router, settings: HttpSettings) -> Result<Self, TlsError> {
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
            _ => None,
        };
        let shared = Shared {
            builder: builder(&settings),
            tls,
            settings,
            router,
        };
        let slots = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
        Ok(Self {
            shared: Arc::new(shared),
            slots,
        })
    }

    /// Serves `listener` until `stopped` turns true, then shuts down within the grace.
    pub async fn serve(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        let (stop_connections, stopping) = watch::channel(false);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => self.admit(&mut connections, tcp, &stopping),
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                Some(_) = connections.join_next() => {}
                () = until_true(&mut stopped) => break,
            }
        }
        drop(listener);
        let _ = stop_connections.send(true);
        let grace = self.shared.settings.shutdown_grace();
        let finished = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, finished).await.is_err() {
            tracing::info!(
                left = connections.len(),
                "shutdown grace over: closing connections"
            );
            connections.shutdown().await;
        }
    }

    /// Serves `tcp` if a slot is free; otherwise closes it at once.
    fn admit(
        &self,
        connections: &mut JoinSet<()>,
        tcp: tokio::net::TcpStream,
        stopping: &watch::Receiver<bool>,
    ) {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!("connection cap reached: closing a new connection");
            return;
        };
        let (shared, stopping) = (self.shared.clone(), stopping.clone());
        connections.spawn(async move {
            serve(&shared, tcp, stopping).await;
            drop(slot);
        });
    }
}

/// hyper's connection builder with the limits of `settings`.
fn builder(settings: &HttpSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout())
        .max_buf_size(settings.max_header_bytes.max(8192))
        .max_headers(settings.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(CLIENT_PING)
        .keep_alive_timeout(CLIENT_PING);
    builder
}
