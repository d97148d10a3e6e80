//! The gRPC server on worker threads: each a single-threaded runtime with its own listening
//! socket on the gRPC port (`SO_REUSEPORT`: the kernel spreads the gateways' connections
//! over them). hyper's HTTP/2 server runs every request on a task of its own; on the shared
//! multi-threaded runtime another thread took that task and handed its answer back to the
//! connection's thread, so a cached answer took about twice as long over gRPC as over
//! HTTP/1.1 (whose handler runs in the connection's task). On a worker a connection, its
//! requests and their answers share one thread. The engine keeps its own threads.

use tokio::net::{TcpListener, TcpSocket};

/// Runs `serve` on each socket's listener, each on a worker thread of its own; the handle
/// ends when every worker has.
pub fn start<F, Fut>(
    sockets: Vec<TcpSocket>,
    serve: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()>,
{
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let serve = serve.clone();
        let thread = std::thread::Builder::new()
            .name(format!("grpc-worker-{i}"))
            .spawn(move || serve_one(socket, serve))?;
        threads.push(thread);
    }
    Ok(tokio::task::spawn_blocking(move || {
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a gRPC worker panicked");
            }
        }
    }))
}

fn serve_one<F, Fut>(socket: TcpSocket, serve: F)
where
    F: Fn(TcpListener) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return tracing::error!(error = %e, "gRPC worker runtime"),
    };
    runtime.block_on(async move {
        match socket.listen(1024) {
            Ok(listener) => serve(listener).await,
            Err(e) => tracing::error!(error = %e, "gRPC worker listen"),
        }
    });
}
