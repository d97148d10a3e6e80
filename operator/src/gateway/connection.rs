//! The request path's connection to an agent: HTTP/2 straight over `h2`, under tonic's
//! typed client (`AgentClient<AgentConnection>`), which keeps the protobuf coding and the
//! gRPC status handling. A tonic `Channel` puts a buffer task, hyper's dispatch task and a
//! body-piping task between the caller and the socket, and its request headers and body
//! leave in two writes; here the caller queues both frames on the connection before its
//! task runs, so one write carries them, and the only other task is the connection's.
//! (`Generate` itself skips tonic's client too, see `stream`; load reports, a long-lived
//! stream, use a tonic `Channel`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::BodyExt as _;
use inferpool_protocol::agent::agent_client::AgentClient;

use super::stream::drop_undecodable_details;

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Flow-control windows: large enough that answers never wait for window updates.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// An HTTP/2 connection to one agent (cheap to clone; every clone shares it).
#[derive(Debug, Clone)]
pub struct AgentConnection {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    origin: http::Uri,
    authority: http::uri::Authority,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed or timed out.
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[from] h2::Error),
}

/// A TCP connection to an agent (within `CONNECT_TIMEOUT`), writes sent at once.
pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Sets its flag when dropped: the connection task ended, or its runtime went away.
struct ClosedOnDrop(Arc<AtomicBool>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl AgentConnection {
    /// Connects to `addr` and drives the connection on a task of the current runtime.
    pub async fn connect(addr: SocketAddr) -> Result<Self, ConnectError> {
        let tcp = connect_tcp(addr).await?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake(tcp)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let guard = ClosedOnDrop(closed.clone());
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "agent connection ended");
            }
        });
        let invalid = |e: http::Error| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let authority =
            http::uri::Authority::try_from(addr.to_string()).map_err(|e| invalid(e.into()))?;
        let origin = http::Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(invalid)?;
        Ok(Self {
            send,
            closed,
            origin,
            authority,
        })
    }

    /// The sender, once the connection can take one more request.
    pub async fn ready_sender(&self) -> Result<h2::client::SendRequest<Bytes>, h2::Error> {
        self.send.clone().ready().await
    }

    /// The URI of `path` on this agent.
    pub fn uri(&self, path: &'static str) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }

    /// The agent's gRPC client over this connection.
    pub fn client(&self) -> AgentClient<Self> {
        AgentClient::with_origin(self.clone(), self.origin.clone())
    }

    /// Whether the connection has ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for AgentConnection {
    type Response = http::Response<AgentBody>;
    type Error = h2::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut send = self.send.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A gRPC request body is one encoded message, ready at once.
            let message = body.collect().await.map_err(h2_error)?.to_bytes();
            let (response, mut stream) =
                send.send_request(http::Request::from_parts(parts, ()), false)?;
            stream.send_data(message, true)?;
            let mut response = response.await?;
            drop_undecodable_details(response.headers_mut());
            Ok(response.map(AgentBody::new))
        })
    }
}

fn h2_error(_: tonic::Status) -> h2::Error {
    h2::Error::from(h2::Reason::INTERNAL_ERROR)
}

/// An answer's body: DATA frames (their flow-control window given back as they are
/// read), then the trailers that carry the gRPC status (status details tonic could not
/// decode are dropped, here and from the headers).
#[derive(Debug)]
pub struct AgentBody {
    stream: h2::RecvStream,
    data_done: bool,
}

impl AgentBody {
    fn new(stream: h2::RecvStream) -> Self {
        Self {
            stream,
            data_done: false,
        }
    }
}

impl http_body::Body for AgentBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match std::task::ready!(self.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.stream.poll_trailers(cx)) {
            Ok(Some(mut trailers)) => {
                drop_undecodable_details(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

/// Open connections by agent address; closed ones and ones unused for a while are
/// forgotten (agents come and go).
#[derive(Debug, Default)]
pub struct ConnectionCache {
    by_addr: HashMap<SocketAddr, (AgentConnection, Instant)>,
}

/// A connection unused this long is dropped when another is added.
const IDLE: Duration = Duration::from_secs(600);

impl ConnectionCache {
    /// The open connection to `addr`, if there is one.
    pub fn get(&mut self, addr: SocketAddr) -> Option<AgentConnection> {
        let (connection, used) = self.by_addr.get_mut(&addr)?;
        if connection.is_closed() {
            self.by_addr.remove(&addr);
            return None;
        }
        *used = Instant::now();
        Some(connection.clone())
    }

    /// Keeps `connection` for `addr`.
    pub fn insert(&mut self, addr: SocketAddr, connection: AgentConnection) {
        let now = Instant::now();
        self.by_addr
            .retain(|_, (c, used)| !c.is_closed() && now.duration_since(*used) < IDLE);
        self.by_addr.insert(addr, (connection, now));
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use inferpool_protocol::agent::EmbedRequest;
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/2 server on loopback that refuses every call with undecodable status
    /// details: in trailers for the first call, in a headers-only answer for the next.
    async fn refusing_server() -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut connection) = h2::server::handshake(tcp).await else {
                return;
            };
            let mut calls = 0;
            while let Some(Ok((_, mut respond))) = connection.accept().await {
                let mut status = HeaderMap::new();
                status.insert("grpc-status", HeaderValue::from_static("8"));
                status.insert("grpc-message", HeaderValue::from_static("busy"));
                status.insert("grpc-status-details-bin", HeaderValue::from_static("?!"));
                let mut head = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap_or_default();
                calls += 1;
                if calls == 1 {
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_trailers(status);
                    }
                } else {
                    head.headers_mut().extend(status);
                    let _ = respond.send_response(head, true);
                }
            }
        });
        Ok(addr)
    }

    #[tokio::test]
    async fn undecodable_status_details_are_dropped_before_tonic_reads_them() {
        let addr = refusing_server().await.unwrap();
        let connection = AgentConnection::connect(addr).await.unwrap();
        for _ in 0..2 {
            // tonic's client panics on such details; here the call fails with the status.
            let refused = connection
                .client()
                .embed(EmbedRequest::default())
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
            assert_eq!(refused.message(), "busy");
            assert!(refused.details().is_empty());
        }
    }
}
