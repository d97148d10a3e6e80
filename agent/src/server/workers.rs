//! The gRPC server on worker threads: each a single-threaded runtime with its own listening
//! socket on the gRPC port (`SO_REUSEPORT`: the kernel spreads the gateways' connections
//! over them). hyper's HTTP/2 server runs every request on a task of its own; on the shared
//! multi-threaded runtime another thread took that task and handed its answer back to the
//! connection's thread, so a cached answer took about twice as long over gRPC as over
//! HTTP/1.1 (whose handler runs in the connection's task). On a worker a connection, its
//! requests and their answers share one thread. The engine keeps its own threads.

use inferpool_protocol::listen::spawn_workers;
use tokio::net::{TcpListener, TcpSocket};

/// Runs `serve` on each socket's listener, each on a worker thread of its own (a worker
/// that fails is logged when it ends); the handle ends when every worker has.
pub fn start<F, Fut>(
    sockets: Vec<TcpSocket>,
    serve: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    let joins: Vec<_> = spawn_workers("grpc-worker", sockets, serve)?
        .into_iter()
        .map(|thread| {
            tokio::task::spawn_blocking(move || match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "a gRPC worker failed"),
                Err(_) => tracing::error!("a gRPC worker panicked"),
            })
        })
        .collect();
    Ok(tokio::spawn(async move {
        for join in joins {
            let _ = join.await;
        }
    }))
}
