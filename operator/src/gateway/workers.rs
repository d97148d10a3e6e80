//! The gateway served by worker threads, as nginx and Envoy serve: each worker is a thread
//! running a single-threaded tokio runtime with its own listening socket on the shared
//! address (`SO_REUSEPORT`: the kernel spreads new connections over the workers) and its
//! own connections to the agents. A request is handled on one thread from the client's
//! bytes to the agent and back, so it wakes no other thread, and each write carries all
//! that is ready (on one multi-threaded runtime an agent call's headers and body went out
//! in two writes from two threads, and each request woke threads several times). The
//! pools, their load reports and the metrics stay shared between workers. The workers serve
//! HTTP with the gateway's own server (see `server`): completions go straight to their
//! handlers, everything else through the axum router.

use std::cell::RefCell;
use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use inferpool_protocol::listen::{WorkerSockets, spawn_workers};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::ConnectionCache;
use super::front::{Gateway, answer_chat, answer_completion, router};
use super::reply::Reply;
use super::server::Handler;
use super::server::request::RawRequest;

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Starts one worker per bound socket, serving `gateway` until `stopped` turns true (each
/// worker then finishes the requests it holds).
pub fn start(
    bound: WorkerSockets,
    gateway: &Arc<Gateway>,
    stopped: &watch::Receiver<bool>,
) -> std::io::Result<Workers> {
    let front = Front {
        router: router(gateway.clone()),
        gateway: gateway.clone(),
    };
    let stopped = stopped.clone();
    let serve = move |listener| serve_one(listener, front.clone(), stopped.clone());
    let threads = spawn_workers("gateway-worker", bound.into_sockets(), serve)?;
    Ok(Workers { threads })
}

impl Workers {
    /// Waits until every worker has stopped; the first error, if any.
    pub async fn join(self) -> std::io::Result<()> {
        let joined = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for t in self.threads {
                let outcome = t
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a gateway worker panicked")));
                result = result.and(outcome);
            }
            result
        });
        joined.await.map_err(std::io::Error::other)?
    }
}

/// One worker's serving, on its own thread and runtime, with its own agent connections.
async fn serve_one(
    listener: TcpListener,
    front: Front,
    stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _connections = OwnConnections::install();
    tokio::spawn(tick());
    super::server::serve(listener, front, stopped).await
}

/// The gateway's front door as the workers serve it: completions straight to their
/// handlers, the rest through the router.
#[derive(Clone)]
struct Front {
    router: Router,
    gateway: Arc<Gateway>,
}

impl Handler for Front {
    async fn answer(&self, request: RawRequest) -> Reply {
        if request.method() == Method::POST {
            let body = request.body.clone();
            match request.path() {
                "/v1/chat/completions" => return answer_chat(&self.gateway, &request, body).await,
                "/v1/completions" => {
                    return answer_completion(&self.gateway, &request, body).await;
                }
                _ => {}
            }
        }
        self.router.answer(request).await
    }
}

/// This thread's own connections while it serves. The connections' tasks live on the
/// worker's runtime: they are dropped when serving ends, before the runtime is.
struct OwnConnections;

impl OwnConnections {
    fn install() -> Self {
        WORKER_CONNECTIONS.set(Some(ConnectionCache::default()));
        Self
    }
}

impl Drop for OwnConnections {
    fn drop(&mut self) {
        WORKER_CONNECTIONS.set(None);
    }
}

/// How often an otherwise idle worker's timer wakes.
const TICK: Duration = Duration::from_secs(1);

/// A timer that is always due within a second. Tokio wakes its driver (a write to an
/// eventfd, then one more trip through the event loop) whenever a new timer is due before
/// every other one; on a worker with no other timer that was every request's timeout.
/// With this tick due first, deadlines seconds away never move the driver's wake-up.
async fn tick() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

thread_local! {
    /// A worker thread's own connections to the agents; `None` off worker threads.
    static WORKER_CONNECTIONS: RefCell<Option<ConnectionCache>> = const { RefCell::new(None) };
}

/// Runs `f` on this worker's connections; `None` off worker threads.
pub fn with_worker_connections<T>(f: impl FnOnce(&mut ConnectionCache) -> T) -> Option<T> {
    WORKER_CONNECTIONS.with_borrow_mut(|c| c.as_mut().map(f))
}
