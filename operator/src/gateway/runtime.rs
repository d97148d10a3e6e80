//! The gateway wired together: the API router on the HTTP server, on every socket bound
//! for it, on the caller's runtime; when serving ends, the pools' agent links close too,
//! so agents waiting for their connections to end can stop.

use std::sync::Arc;

use inferpool_protocol::listen::WorkerSockets;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::api::router;
use super::dispatch::gateway::Gateway;
use super::http::limits::HttpSettings;
use super::http::server::Server;

/// The running server.
#[derive(Debug)]
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
    gateway: Arc<Gateway>,
}

/// Serves `gateway` on `bound` with `settings` until `stopped` turns true; each socket
/// gets its own accept loop, and every connection its own task on this runtime.
pub fn start_with(
    bound: WorkerSockets,
    gateway: &Arc<Gateway>,
    stopped: &watch::Receiver<bool>,
    settings: HttpSettings,
) -> std::io::Result<Workers> {
    let server = Server::new(router(gateway.clone()), settings).map_err(std::io::Error::other)?;
    let mut tasks = Vec::new();
    for socket in bound.into_sockets() {
        let listener = socket.listen(1024)?;
        tasks.push(tokio::spawn(
            server.clone().serve(listener, stopped.clone()),
        ));
    }
    Ok(Workers {
        tasks,
        gateway: gateway.clone(),
    })
}

impl Workers {
    /// Waits until serving has stopped (within the shutdown grace), then closes the
    /// gateway's links to its agents.
    pub async fn join(self) -> std::io::Result<()> {
        let mut result = Ok(());
        for task in self.tasks {
            if let Err(e) = task.await {
                result = Err(std::io::Error::other(e));
            }
        }
        self.gateway.close();
        result
    }
}
