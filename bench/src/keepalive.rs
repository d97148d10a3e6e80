//! A minimal HTTP/1.1 client over one kept-alive loopback connection, for load generators
//! that measure tens of microseconds (a new connection per request would dominate them).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One persistent connection.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `addr` (loopback only).
    pub fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "benchmarks dial loopback only, not {addr}"
        );
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Self {
            addr,
            reader: BufReader::new(stream),
        })
    }

    /// POSTs `body` as JSON to `path`; returns the status once the whole body is read. A
    /// connection the server closed between requests (nginx does after 1000) is opened
    /// again and the request sent once more.
    pub fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        match self.post_once(path, body) {
            Err(e) if e.downcast_ref::<Closed>().is_some() => {
                *self = Self::open(self.addr)?;
                self.post_once(path, body)
            }
            other => other,
        }
    }

    fn post_once(&mut self, path: &str, body: &[u8]) -> anyhow::Result<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = self.reader.get_mut();
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body));
        if let Err(e) = sent {
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            if matches!(e.kind(), BrokenPipe | ConnectionReset) {
                return Err(Closed.into());
            }
            return Err(e.into());
        }
        let (status, length, chunked) = self.read_head()?;
        if chunked {
            self.skip_chunks()?;
        } else {
            self.skip(length)?;
        }
        Ok(status)
    }

    /// Status, `Content-Length` and whether the body is chunked.
    fn read_head(&mut self) -> anyhow::Result<(u16, usize, bool)> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(Closed.into());
        }
        let status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
        let status = status.ok_or_else(|| anyhow::anyhow!("bad status line {line:?}"))?;
        let (mut length, mut chunked) = (0, false);
        loop {
            line.clear();
            anyhow::ensure!(self.reader.read_line(&mut line)? > 0, "connection closed");
            let lower = line.to_ascii_lowercase();
            if lower == "\r\n" {
                return Ok((status, length, chunked));
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        }
    }

    fn skip(&mut self, n: usize) -> anyhow::Result<()> {
        let copied = std::io::copy(&mut (&mut self.reader).take(n as u64), &mut std::io::sink())?;
        anyhow::ensure!(copied == n as u64, "body cut short");
        Ok(())
    }

    fn skip_chunks(&mut self) -> anyhow::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)?;
            self.skip(size + 2)?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

/// The server closed the connection before answering.
#[derive(Debug, thiserror::Error)]
#[error("the server closed the connection")]
struct Closed;
