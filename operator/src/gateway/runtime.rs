//! The gateway wired together: the API router on the HTTP server, on every socket bound
//! for it, each socket served by a thread of its own running a single-threaded runtime (a
//! request, its connection to the agent and its answer stay on one thread, as in nginx's
//! workers: no cross-thread wake-ups); when serving ends, the pools' agent links close
//! too, so agents waiting for their connections to end can stop.

use std::sync::Arc;
use std::thread::JoinHandle;

use inferpool_protocol::listen::{WorkerSockets, spawn_workers};
use tokio::sync::watch;

use super::api::router;
use super::dispatch::gateway::Gateway;
use super::http::limits::HttpSettings;
use super::http::server::Server;

/// The running server.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    gateway: Arc<Gateway>,
}

/// Serves `gateway` on `bound` with `settings` until `stopped` turns true; each socket
/// gets its own worker thread, and every connection its own task on that thread.
pub fn start_with(
    bound: WorkerSockets,
    gateway: &Arc<Gateway>,
    stopped: &watch::Receiver<bool>,
    settings: HttpSettings,
) -> std::io::Result<Workers> {
    let server = Server::new(router(gateway.clone()), settings).map_err(std::io::Error::other)?;
    let stopped = stopped.clone();
    let threads = spawn_workers("gateway", bound.into_sockets(), move |listener| {
        let (server, stopped) = (server.clone(), stopped.clone());
        async move {
            server.serve(listener, stopped).await;
            Ok(())
        }
    })?;
    Ok(Workers {
        threads,
        gateway: gateway.clone(),
    })
}

impl Workers {
    /// Waits until serving has stopped (within the shutdown grace), then closes the
    /// gateway's links to its agents.
    pub async fn join(self) -> std::io::Result<()> {
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            threads.into_iter().try_for_each(|t| {
                t.join()
                    .map_err(|_| std::io::Error::other("a gateway worker panicked"))?
            })
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        self.gateway.close();
        joined
    }
}
