//! Serving one accepted connection: TLS first when configured (within the header
//! timeout), then hyper's auto-detecting HTTP/1.1 or HTTP/2 connection, its writes bounded
//! by the write timeout, closed when idle too long or when the server stops (gracefully:
//! requests in flight finish; the server ends what is left after its grace).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;

use super::activity::Activity;
use super::body::{BodyLimits, Bounded};
use super::limits::HttpSettings;

/// How long an idle connection that was told to close may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What every connection of a server shares.
pub struct Shared {
    /// hyper's configured connection builder.
    pub builder: auto::Builder<TokioExecutor>,
    /// TLS, when the port serves it.
    pub tls: Option<TlsAcceptor>,
    /// The limits.
    pub settings: HttpSettings,
    /// The router.
    pub router: Router,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("tls", &self.tls.is_some())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Serves `tcp` until it ends, is idle too long, or `stopping` turns true.
pub async fn serve(shared: &Shared, tcp: TcpStream, stopping: watch::Receiver<bool>) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let Some(tls) = &shared.tls else {
        return drive(shared, tcp, stopping).await;
    };
    let handshake = tokio::time::timeout(shared.settings.header_read_timeout(), tls.accept(tcp));
    match handshake.await {
        Ok(Ok(stream)) => drive(shared, stream, stopping).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!("TLS handshake timed out"),
    }
}

async fn drive<IO>(shared: &Shared, io: IO, mut stopping: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let settings = &shared.settings;
    let activity = Activity::new();
    let limits = BodyLimits {
        max_bytes: settings.max_body_bytes,
        read_timeout: settings.body_read_timeout(),
    };
    let service = Bounded::new(shared.router.clone(), limits, activity.clone());
    let mut stream = TimeoutStream::new(io);
    stream.set_write_timeout(Some(settings.write_timeout()));
    let io = TokioIo::new(Box::pin(stream));
    let connection = shared.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let idle = activity.idle_for(settings.header_read_timeout(), settings.idle_timeout());
    tokio::select! {
        served = connection.as_mut() => return log_end(served),
        () = idle => {}
        () = until_true(&mut stopping) => {
            // Requests in flight finish; the server ends the connection after its grace.
            connection.as_mut().graceful_shutdown();
            return log_end(connection.await);
        }
    }
    connection.as_mut().graceful_shutdown();
    if let Ok(served) = tokio::time::timeout(CLOSE_GRACE, connection).await {
        log_end(served);
    }
}

/// Returns once `flag` is true (or its sender is gone).
pub async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|s| *s).await;
}

fn log_end(served: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended");
    }
}
