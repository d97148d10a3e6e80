//! The gateway workers' HTTP/1.1 server: one task per connection reads a request (see
//! `request`), has a `Handler` answer it and writes the answer (see `response`), the head
//! and a whole body in one write. Completions, the gateway's traffic, go straight to their
//! handlers with the request as read and come back as a status, a content type and a body
//! (`Reply::Complete`): no header map, request, router or response is built for them, which
//! under hyper and axum cost the gateway more CPU than the rest of its request path (and
//! kept it behind nginx's requests per second). Every other request goes to the axum
//! router. HTTP/1.1 only: keep-alive, pipelining (in order), `Expect: 100-continue`, chunked
//! bodies both ways, `HEAD`; refusals in the API's error shape. A client that closes its
//! connection while its request runs cancels the request, as with hyper.

pub mod request;
pub mod response;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use bytes::BytesMut;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use self::request::{BadRequest, RawRequest, ReadError, read_body, read_head};
use self::response::{Writing, write_reply};
use super::checks::ApiError;
use super::front::MAX_BODY_BYTES;
use super::reply::Reply;

/// What answers a server's requests.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The answer to `request`.
    fn answer(&self, request: RawRequest) -> impl Future<Output = Reply> + Send;
}

/// Every request through the router.
impl Handler for Router {
    async fn answer(&self, request: RawRequest) -> Reply {
        let request = match request.into_http() {
            Ok(request) => request,
            Err(bad) => return Reply::Complete(refusal(bad).complete()),
        };
        let call = tower_service::Service::call(&mut self.clone(), request);
        Reply::Response(call.await.unwrap_or_else(|never| match never {}))
    }
}

fn refusal(bad: BadRequest) -> ApiError {
    ApiError::new(bad.status(), bad.error_type(), bad.to_string())
}

/// How long a connection may wait for (the rest of) its next request head.
const IDLE: Duration = Duration::from_secs(120);
/// How long accepting pauses after it failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Past this much read ahead (pipelined requests) while a request runs, the server stops
/// reading until it is answered.
const READ_AHEAD: usize = 64 * 1024;

/// Serves `handler` on `listener` until `stopped` turns true; then stops accepting, lets
/// each connection finish the request it is on, and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut connections = JoinSet::new();
    let for_connections = stopped.clone();
    let mut stop = std::pin::pin!(until_stopped(stopped));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let stopped = for_connections.clone();
                    connections.spawn(connection(socket, handler.clone(), stopped));
                }
                Err(e) => accept_failed(&e).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Returns once `stopped` turns true (or its sender is gone).
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await (it is not `Send`).
    let _ = stopped.wait_for(|s| *s).await.is_ok();
}

/// A connection that failed before it was accepted is the client's affair; any other
/// failure (out of descriptors, say) pauses accepting while connections close.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Serves one connection's requests in order until it closes, fails, or the server stops.
async fn connection(mut socket: TcpStream, handler: impl Handler, stopped: watch::Receiver<bool>) {
    crate::run::no_delay(&mut socket);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    // Futures made once per connection, not once per request.
    let mut stop = std::pin::pin!(until_stopped(stopped.clone()));
    let mut idle = IdleCheck::new();
    loop {
        let head = tokio::select! {
            head = read_head(&mut socket, &mut buffer) => head,
            () = &mut stop => return,
            () = idle.expired() => return,
        };
        let head = match head {
            Ok(Some(head)) => head,
            Err(ReadError::Bad(bad)) => return refuse(&mut socket, bad).await,
            Ok(None) | Err(ReadError::Io(_)) => return,
        };
        idle.requests += 1;
        let (head_only, keep_alive) = (head.method() == axum::http::Method::HEAD, head.keep_alive);
        let request = match read_body(&mut socket, &mut buffer, head, MAX_BODY_BYTES).await {
            Ok(request) => request,
            Err(ReadError::Bad(bad)) => return refuse(&mut socket, bad).await,
            Err(ReadError::Io(_)) => return,
        };
        let Some(reply) = run(&handler, request, &mut socket, &mut buffer).await else {
            return;
        };
        // A server that is stopping says so in the answer it finishes with.
        let how = Writing {
            head_only,
            keep_alive: keep_alive && !*stopped.borrow(),
        };
        if write_reply(&mut socket, reply, how).await.is_err() || !how.keep_alive {
            return;
        }
    }
}

/// Closes a connection that waits too long for its next request without a timer per
/// request: one timer per connection fires every `IDLE`, and the connection closes when no
/// request head was read since the last time it fired. So a connection closes between one
/// and two `IDLE`s after its last request (or after it began a head it did not finish).
struct IdleCheck {
    timer: Pin<Box<Sleep>>,
    /// Request heads read so far.
    requests: u64,
    /// `requests` when the timer last fired.
    seen: u64,
}

impl IdleCheck {
    fn new() -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep(IDLE)),
            requests: 0,
            seen: 0,
        }
    }

    /// Returns when the connection has been idle too long.
    async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            if self.requests == self.seen {
                return;
            }
            self.seen = self.requests;
            self.timer.as_mut().reset(Instant::now() + IDLE);
        }
    }
}

/// The handler's answer to `request`; `None` when the client closed the connection first
/// (the request is dropped, which cancels it). Bytes of pipelined requests that arrive
/// meanwhile are kept in `buffer`.
async fn run(
    handler: &impl Handler,
    request: RawRequest,
    socket: &mut TcpStream,
    buffer: &mut BytesMut,
) -> Option<Reply> {
    let call = handler.answer(request);
    tokio::pin!(call);
    loop {
        tokio::select! {
            biased;
            answered = &mut call => return Some(answered),
            read = socket.read_buf(buffer), if buffer.len() < READ_AHEAD => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// Answers a request that could not be read, and closes.
async fn refuse(socket: &mut TcpStream, bad: BadRequest) {
    let how = Writing {
        head_only: false,
        keep_alive: false,
    };
    let _ = write_reply(socket, Reply::Complete(refusal(bad).complete()), how).await;
}
