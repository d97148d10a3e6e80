//! A benchmark's child process (an agent, a gateway, a reference server), stopped when
//! dropped, with the scratch folder it runs in.

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use inferpool_e2e::http::get;
use inferpool_e2e::parts::ScratchDir;

/// A child process, stopped when dropped.
#[derive(Debug)]
pub struct Process {
    /// The process.
    pub child: Child,
    _dir: ScratchDir,
}

impl Process {
    /// `child`, running in `dir` (removed after it stops).
    pub fn new(child: Child, dir: ScratchDir) -> Self {
        Self { child, _dir: dir }
    }
}

impl Drop for Process {
    /// SIGTERM first (nginx's master then stops its workers; SIGKILL would orphan them),
    /// SIGKILL if it is still there after 5 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `GET path` on `addr` answers 200, at most `limit`; returns how long it took.
pub fn until_ready(addr: SocketAddr, path: &str, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if matches!(get(addr, path), Ok((200, _))) {
            return Ok(started.elapsed());
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
    anyhow::bail!("{addr}{path} did not answer 200 within {limit:?}")
}
