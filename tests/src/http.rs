//! A minimal HTTP/1.1 GET over loopback, for reading health and metrics endpoints in tests
//! without pulling an HTTP client into the test crate.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GETs `path` from `addr`; returns the status code and body.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    anyhow::ensure!(
        crate::netns::may_dial(addr.ip()),
        "tests only dial loopback or their own network namespaces, not {addr}"
    );
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// The value of an unlabelled metric in Prometheus text, if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// A free port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `N` distinct free ports on loopback: each probe stays open until all are chosen (one
/// closed probe's port may be handed out again at once).
pub fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let probes = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let addrs = probes
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    addrs.try_into().map_err(|_| anyhow::anyhow!("{N} ports"))
}

/// The value of header `name` (lower case) in a lower-cased response `head`, trimmed.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim())
    })
}

/// The agents' `x-inferpool-cache` in a response `head` (empty when absent).
pub fn cache_header(head: &str) -> String {
    header(head, inferpool_protocol::cache::CACHE_HEADER)
        .unwrap_or_default()
        .to_owned()
}

/// A response read whole: status, head (lower-cased header lines) and body (de-chunked).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.body)?)
    }
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    anyhow::ensure!(
        crate::netns::may_dial(addr.ip()),
        "tests only dial loopback or their own network namespaces, not {addr}"
    );
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    // Long: under load tests a request may wait minutes for its first byte.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    Ok(stream)
}

fn send_post(
    stream: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<()> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (413) before reading a large body; a reset here is its answer.
    let _ = stream.write_all(body);
    Ok(())
}

/// POSTs `body` to `path` and reads the whole reply.
pub fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Reply> {
    let mut stream = connect(addr)?;
    send_post(&mut stream, addr, path, headers, body)?;
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    // A reset after the answer is still the answer; a reset before any byte is the error.
    if raw.is_empty() {
        read.map_err(|e| anyhow::anyhow!("POST {path}: no answer: {e}"))?;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head = head.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply { status, head, body })
}

/// Sends a POST of the JSON `body` and returns the connection without reading from it (a
/// client that may leave before its answer: dropping the stream closes it).
pub fn send_request(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<TcpStream> {
    let mut stream = connect(addr)?;
    send_post(&mut stream, addr, path, &[], body.to_string().as_bytes())?;
    Ok(stream)
}

/// Whether any byte of an answer has arrived on `stream` (without consuming it).
pub fn has_answer(stream: &TcpStream) -> anyhow::Result<bool> {
    stream.set_nonblocking(true)?;
    let peeked = stream.peek(&mut [0; 1]);
    stream.set_nonblocking(false)?;
    match peeked {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// POSTs a JSON value.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> anyhow::Result<Reply> {
    post(addr, path, &[], body.to_string().as_bytes())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Server-sent events read as they arrive; dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    reader: std::io::BufReader<TcpStream>,
    /// Status of the response.
    pub status: u16,
    /// Header lines, lower-cased.
    pub head: String,
}

impl EventStream {
    /// POSTs a streaming request and reads the response head.
    pub fn open(addr: SocketAddr, path: &str, body: &serde_json::Value) -> anyhow::Result<Self> {
        Self::open_with(addr, path, &[], body)
    }

    /// The same with extra request `headers`.
    pub fn open_with(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let mut stream = connect(addr)?;
        send_post(
            &mut stream,
            addr,
            path,
            headers,
            body.to_string().as_bytes(),
        )?;
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut head = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        Ok(Self {
            reader,
            status,
            head,
        })
    }

    /// The next event's data (`[DONE]` included); `None` at the end of the stream.
    pub fn next_data(&mut self) -> anyhow::Result<Option<String>> {
        use std::io::BufRead as _;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return Ok(Some(data.to_owned()));
            }
        }
    }

    /// The next line of the body as sent (comments, `data:` lines, blank separators),
    /// without its line end; `None` at the end of the stream.
    pub fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        use std::io::BufRead as _;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
    }

    /// The rest of the body as text (for a refusal, which is not a stream of events).
    pub fn rest(&mut self) -> String {
        use std::io::Read as _;
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
        rest
    }

    /// Every remaining event's data, parsed as JSON, up to `[DONE]`.
    pub fn collect(&mut self) -> anyhow::Result<(Vec<serde_json::Value>, bool)> {
        let mut events = Vec::new();
        while let Some(data) = self.next_data()? {
            if data == "[DONE]" {
                return Ok((events, true));
            }
            events.push(serde_json::from_str(&data)?);
        }
        Ok((events, false))
    }
}
