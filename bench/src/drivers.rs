//! Load from the field's own generators, so that a proxy's figures do not rest on our
//! client alone: `wrk` (HTTP/1.1, kept-alive connections) and `h2load` (HTTP/2 with prior
//! knowledge), both from Debian's packages (`bench/load-tools-fetch`). Each run posts one
//! JSON body for a fixed time and reports requests/s and latency; any answer that is not a
//! 2xx fails the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The folder `bench/load-tools-fetch` printed: `usr/bin` and the libraries they need.
#[derive(Debug, Clone)]
pub struct LoadTools {
    root: PathBuf,
}

/// One load run.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// Where to post.
    pub addr: SocketAddr,
    /// The path.
    pub path: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
    /// Connections at once.
    pub clients: usize,
    /// How long.
    pub seconds: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Requests answered per second.
    pub rps: f64,
    /// Median latency (`wrk`), or mean (`h2load`, which reports no percentiles).
    pub p50: Duration,
    /// 99th percentile latency (`wrk`); the slowest request (`h2load`).
    pub p99: Duration,
}

impl LoadTools {
    /// The tools in `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(self.root.join("usr/bin").join(tool));
        command.env(
            "LD_LIBRARY_PATH",
            self.root.join("usr/lib/x86_64-linux-gnu"),
        );
        command
    }

    /// `load` with `wrk` over HTTP/1.1 (two threads).
    pub fn wrk(&self, load: Load<'_>, scratch: &Path) -> anyhow::Result<Measured> {
        let body = std::str::from_utf8(load.body)?;
        anyhow::ensure!(!body.contains("]]"), "the body must fit a Lua long string");
        let script = scratch.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.body = [[{body}]]\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n"
            ),
        )?;
        let out = self
            .command("wrk")
            .args(["-t2", "--latency", "--timeout", "10s"])
            .arg(format!("-c{}", load.clients))
            .arg(format!("-d{}s", load.seconds))
            .arg("-s")
            .arg(&script)
            .arg(format!("http://{}{}", load.addr, load.path))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "wrk failed: {text}");
        parse_wrk(&text)
    }

    /// `load` with `h2load` over HTTP/2 with prior knowledge (one stream per connection at
    /// a time, like the HTTP/1.1 clients).
    pub fn h2load(&self, load: Load<'_>, scratch: &Path) -> anyhow::Result<Measured> {
        let body = scratch.join("body.json");
        std::fs::write(&body, load.body)?;
        let out = self
            .command("h2load")
            .args(["-m1", "-t2", "-H", "content-type: application/json", "-d"])
            .arg(&body)
            .arg(format!("-c{}", load.clients))
            .arg(format!("-D{}", load.seconds))
            .arg(format!("http://{}{}", load.addr, load.path))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "h2load failed: {text}");
        parse_h2load(&text)
    }
}

/// A duration as wrk and h2load print it: `850.00us`, `1.23ms`, `1.50s`.
fn duration(text: &str) -> Option<Duration> {
    let units = [("us", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        let n: f64 = text.strip_suffix(unit)?.parse().ok()?;
        Some(Duration::from_secs_f64(n * scale))
    })
}

/// The words of the first line of `text` that starts (trimmed) with `label`.
fn line_after<'t>(text: &'t str, label: &str) -> Option<Vec<&'t str>> {
    let line = text.lines().find_map(|l| l.trim().strip_prefix(label))?;
    Some(line.split_whitespace().collect())
}

fn parse_wrk(text: &str) -> anyhow::Result<Measured> {
    let bad = line_after(text, "Non-2xx or 3xx responses:");
    anyhow::ensure!(bad.is_none(), "answers that were not 2xx: {text}");
    let errors = line_after(text, "Socket errors:");
    anyhow::ensure!(errors.is_none(), "socket errors: {text}");
    let field = |label: &str| line_after(text, label).and_then(|w| w.first().copied());
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok());
    let p50 = field("50%").and_then(duration);
    let p99 = field("99%").and_then(duration);
    match (rps, p50, p99) {
        (Some(rps), Some(p50), Some(p99)) => Ok(Measured { rps, p50, p99 }),
        _ => anyhow::bail!("unreadable wrk output: {text}"),
    }
}

fn parse_h2load(text: &str) -> anyhow::Result<Measured> {
    let codes = line_after(text, "status codes:").unwrap_or_default();
    let ok_only = codes
        .chunks(2)
        .all(|c| c[0] == "0" || c[1].starts_with("2xx"));
    anyhow::ensure!(
        !codes.is_empty() && ok_only,
        "answers that were not 2xx: {text}"
    );
    let requests = line_after(text, "requests:").unwrap_or_default();
    let failed = requests
        .windows(2)
        .any(|w| w[0] != "0" && w[1].starts_with("failed"));
    anyhow::ensure!(!failed, "failed requests: {text}");
    let rps = line_after(text, "finished in").and_then(|w| w.get(1)?.parse().ok());
    // min, max, mean, sd, +/- sd.
    let times = line_after(text, "time for request:").unwrap_or_default();
    let max = times.get(1).and_then(|t| duration(t));
    let mean = times.get(2).and_then(|t| duration(t));
    match (rps, mean, max) {
        (Some(rps), Some(p50), Some(p99)) => Ok(Measured { rps, p50, p99 }),
        _ => anyhow::bail!("unreadable h2load output: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:1/v1/chat/completions
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  500.00us   9.00ms   80.00%
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.00ms
     99%    4.50ms
  12345 requests in 5.00s, 3.21MB read
Requests/sec:   2469.00
Transfer/sec:    657.00KB
";

    const H2LOAD: &str = "finished in 5.00s, 2000.50 req/s, 1.20MB/s
requests: 10003 total, 10003 started, 10003 done, 10003 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 10003 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 6.00MB (6291456) total
                     min         max         mean         sd        +/- sd
time for request:   300us     12.00ms      1.50ms       0.5ms    90.00%
";

    #[test]
    fn reads_wrk() {
        let m = parse_wrk(WRK).ok();
        assert_eq!(
            m,
            Some(Measured {
                rps: 2469.0,
                p50: Duration::from_micros(850),
                p99: Duration::from_micros(4500),
            })
        );
        let refused = WRK.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 3\nRequests/sec",
        );
        assert!(parse_wrk(&refused).is_err());
    }

    #[test]
    fn reads_h2load() {
        let m = parse_h2load(H2LOAD).ok();
        assert_eq!(
            m,
            Some(Measured {
                rps: 2000.5,
                p50: Duration::from_micros(1500),
                p99: Duration::from_millis(12),
            })
        );
        let refused = H2LOAD.replace("0 4xx", "7 4xx");
        assert!(parse_h2load(&refused).is_err());
        let failed = H2LOAD.replace("0 failed", "2 failed");
        assert!(parse_h2load(&failed).is_err());
    }
}
