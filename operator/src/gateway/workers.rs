//! The gateway served by worker threads, as nginx and Envoy serve: each worker is a thread
//! running a single-threaded tokio runtime with its own listening socket on the shared
//! address (`SO_REUSEPORT`: the kernel spreads new connections over the workers) and its
//! own connections to the agents. A request is handled on one thread from the client's
//! bytes to the agent and back, so it wakes no other thread, and each write carries all
//! that is ready (on one multi-threaded runtime an agent call's headers and body went out
//! in two writes from two threads, and each request woke threads several times). The
//! pools, their load reports and the metrics stay shared between workers.

use std::cell::RefCell;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt as _;
use inferpool_protocol::listen::{WorkerSockets, spawn_workers};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::ConnectionCache;

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

/// Starts one worker per bound socket, serving `app` until `stopped` turns true (each
/// worker then finishes the requests it holds, as `axum::serve` does).
pub fn start(
    bound: WorkerSockets,
    app: &Router,
    stopped: &watch::Receiver<bool>,
) -> std::io::Result<Workers> {
    let (app, stopped) = (app.clone(), stopped.clone());
    let serve = move |listener| serve_one(listener, app.clone(), stopped.clone());
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
    app: Router,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _connections = OwnConnections::install();
    tokio::spawn(tick());
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    axum::serve(listener.tap_io(crate::run::no_delay), app)
        .with_graceful_shutdown(shutdown)
        .await
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
