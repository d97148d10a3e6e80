//! How the gateway and the agent listen: one socket per worker thread, all bound to the
//! same address with `SO_REUSEPORT` so that the kernel spreads new connections over the
//! workers (each worker then keeps its connections on its own thread).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};

/// How many workers serve when not told: one per CPU this process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Sockets bound to one address, one per worker, not yet listening.
#[derive(Debug)]
pub struct WorkerSockets {
    sockets: Vec<TcpSocket>,
    addr: SocketAddr,
}

impl WorkerSockets {
    /// Binds `count` sockets (at least one) to `addr`; port 0 picks one port for all.
    pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Self> {
        let first = reuse_port_socket(addr)?;
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..count.max(1) {
            sockets.push(reuse_port_socket(addr)?);
        }
        Ok(Self { sockets, addr })
    }

    /// The address they are bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sockets, one per worker.
    pub fn into_sockets(self) -> Vec<TcpSocket> {
        self.sockets
    }
}

/// Starts one worker thread per socket, named `{name}-{i}`: each runs a single-threaded
/// runtime that listens on its socket and runs `serve` on the listener until it returns.
pub fn spawn_workers<F, Fut>(
    name: &str,
    sockets: Vec<TcpSocket>,
    serve: F,
) -> std::io::Result<Vec<JoinHandle<std::io::Result<()>>>>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let serve = serve.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move { serve(socket.listen(1024)?).await })
            })?;
        threads.push(thread);
    }
    Ok(threads)
}

fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port_even_when_the_port_is_picked() {
        let bound = WorkerSockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 3).unwrap();
        let addr = bound.addr();
        assert_ne!(addr.port(), 0);
        let sockets = bound.into_sockets();
        assert_eq!(sockets.len(), 3);
        assert!(sockets.iter().all(|s| s.local_addr().unwrap() == addr));
    }

    #[test]
    fn each_worker_serves_its_own_socket_on_its_own_named_thread() {
        let bound = WorkerSockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2).unwrap();
        let addr = bound.addr();
        let threads = spawn_workers("probe", bound.into_sockets(), move |listener| async move {
            assert_eq!(listener.local_addr()?, addr);
            let name = std::thread::current().name().map(str::to_owned);
            assert!(name.is_some_and(|n| n.starts_with("probe-")));
            Ok(())
        })
        .unwrap();
        assert_eq!(threads.len(), 2);
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}
