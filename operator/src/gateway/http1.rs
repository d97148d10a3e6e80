//! The unary request path's connection to an agent: HTTP/1.1 to the agent's own OpenAI API
//! over kept-alive connections, as nginx proxies. A whole (non-streamed) answer needs no
//! framing beyond HTTP's, and the agent's HTTP/1.1 server costs it less per request than
//! its gRPC one; the request leaves in one write and the gateway passes the agent's
//! answer on as it is. Idle connections are kept per worker thread, like the HTTP/2 ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};

use super::chunked::{Chunk, ChunkError, next_chunk};
use super::connection::connect_tcp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Idle connections kept per agent (per worker thread).
const MAX_IDLE_PER_AGENT: usize = 64;
/// An idle connection older than this is closed rather than reused.
const IDLE: Duration = Duration::from_secs(60);
/// Largest answer head, and largest answer.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most headers read from an answer.
const MAX_HEADERS: usize = 32;

/// One request to an agent's HTTP API.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    /// The path, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    /// Extra headers (names and values are sent as they are: the caller checks them).
    pub headers: &'a [(&'a str, &'a str)],
    /// The JSON body.
    pub body: &'a [u8],
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its content type, if it said one.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Bytes,
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// The connection failed before the whole answer arrived.
    #[error("reading the answer: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not HTTP/1.1 as expected.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
}

/// Sends `post` to the agent at `addr` on an idle connection (a fresh one when none is
/// idle, or when the idle one turns out to have been closed by the agent).
pub async fn post(addr: SocketAddr, post: Post<'_>) -> Result<Answer, CallError> {
    let request = encode(addr, post);
    if let Some(connection) = take_idle(addr) {
        match exchange(addr, connection, &request).await {
            Err(Stale) => {}
            Ok(answer) => return answer,
        }
    }
    let connection = connect_tcp(addr).await.map_err(CallError::Connect)?;
    match exchange(addr, connection, &request).await {
        Ok(answer) => answer,
        Err(Stale) => Err(CallError::Io(std::io::ErrorKind::UnexpectedEof.into())),
    }
}

/// The connection ended before a byte of the answer came: an idle connection the agent
/// had closed (retried once on a fresh one).
struct Stale;

async fn exchange(
    addr: SocketAddr,
    mut connection: TcpStream,
    request: &[u8],
) -> Result<Result<Answer, CallError>, Stale> {
    if connection.write_all(request).await.is_err() {
        return Err(Stale);
    }
    let mut buffer = BytesMut::with_capacity(4096);
    match connection.read_buf(&mut buffer).await {
        Ok(0) | Err(_) => return Err(Stale),
        Ok(_) => {}
    }
    Ok(read_answer(addr, connection, buffer).await)
}

/// The request's bytes: head and body in one buffer, so that one write carries both.
fn encode(addr: SocketAddr, post: Post<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + post.body.len());
    for part in ["POST ", post.path, " HTTP/1.1\r\nhost: "] {
        out.extend_from_slice(part.as_bytes());
    }
    put_host(&mut out, addr);
    out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(post.body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in post.headers {
        for part in [*name, ": ", *value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(post.body);
    out
}

/// Appends `addr` as text, formatted once per agent address and thread (formatting an
/// address is slow next to the rest of a request's head).
fn put_host(out: &mut Vec<u8>, addr: SocketAddr) {
    HOSTS.with_borrow_mut(|hosts| {
        // Agents come and go: start over rather than grow without end.
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(&addr) {
            hosts.clear();
        }
        let host = hosts.entry(addr).or_insert_with(|| addr.to_string().into());
        out.extend_from_slice(host.as_bytes());
    });
}

/// Most agent addresses whose text a thread keeps.
const MAX_HOSTS: usize = 1024;

thread_local! {
    /// Agent addresses as text (see `put_host`).
    static HOSTS: RefCell<HashMap<SocketAddr, Box<str>>> = RefCell::new(HashMap::new());
}

/// How the answer's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the answer's head says.
#[derive(Debug)]
struct Head {
    status: u16,
    content_type: Option<String>,
    framing: Framing,
    keep_alive: bool,
    len: usize,
}

async fn read_answer(
    addr: SocketAddr,
    mut connection: TcpStream,
    mut buffer: BytesMut,
) -> Result<Answer, CallError> {
    let head = loop {
        if let Some(head) = parse_head(&buffer)? {
            break head;
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(CallError::Malformed("answer head too large"));
        }
        read_more(&mut connection, &mut buffer).await?;
    };
    buffer.advance(head.len);
    let body = match head.framing {
        Framing::Length(n) => read_exactly(&mut connection, buffer, n).await?,
        Framing::Chunked => read_chunked(&mut connection, buffer).await?,
        Framing::UntilClose => read_to_close(&mut connection, buffer).await?,
    };
    if head.keep_alive && head.framing != Framing::UntilClose {
        keep_idle(addr, connection);
    }
    Ok(Answer {
        status: head.status,
        content_type: head.content_type,
        body,
    })
}

async fn read_more(connection: &mut TcpStream, buffer: &mut BytesMut) -> Result<(), CallError> {
    if connection.read_buf(buffer).await? == 0 {
        return Err(CallError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// The head, once `buffer` holds all of it.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, CallError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(CallError::Malformed("not an HTTP/1.1 answer")),
    };
    let status = response.code.ok_or(CallError::Malformed("no status"))?;
    let mut head = Head {
        status,
        content_type: None,
        framing: Framing::UntilClose,
        keep_alive: response.version == Some(1),
        len,
    };
    for h in response.headers.iter() {
        read_header(&mut head, h.name, h.value)?;
    }
    if matches!(status, 204 | 304 | 100..=199) {
        head.framing = Framing::Length(0);
    }
    Ok(Some(head))
}

fn read_header(head: &mut Head, name: &str, value: &[u8]) -> Result<(), CallError> {
    let text = || {
        std::str::from_utf8(value)
            .map(str::trim)
            .unwrap_or_default()
    };
    if name.eq_ignore_ascii_case("content-length") && head.framing != Framing::Chunked {
        let n = text()
            .parse()
            .map_err(|_| CallError::Malformed("bad content-length"))?;
        head.framing = Framing::Length(n);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        if !text().eq_ignore_ascii_case("chunked") {
            return Err(CallError::Malformed("unsupported transfer-encoding"));
        }
        head.framing = Framing::Chunked;
    } else if name.eq_ignore_ascii_case("connection") && text().eq_ignore_ascii_case("close") {
        head.keep_alive = false;
    } else if name.eq_ignore_ascii_case("content-type") {
        head.content_type = Some(text().to_owned());
    }
    Ok(())
}

async fn read_exactly(
    connection: &mut TcpStream,
    mut buffer: BytesMut,
    n: usize,
) -> Result<Bytes, CallError> {
    if n > MAX_BODY_BYTES {
        return Err(CallError::Malformed("answer too large"));
    }
    buffer.reserve(n.saturating_sub(buffer.len()));
    while buffer.len() < n {
        read_more(connection, &mut buffer).await?;
    }
    if buffer.len() > n {
        return Err(CallError::Malformed("bytes after the answer"));
    }
    Ok(buffer.freeze())
}

async fn read_to_close(
    connection: &mut TcpStream,
    mut buffer: BytesMut,
) -> Result<Bytes, CallError> {
    while connection.read_buf(&mut buffer).await? > 0 {
        if buffer.len() > MAX_BODY_BYTES {
            return Err(CallError::Malformed("answer too large"));
        }
    }
    Ok(buffer.freeze())
}

async fn read_chunked(
    connection: &mut TcpStream,
    mut buffer: BytesMut,
) -> Result<Bytes, CallError> {
    let mut body = BytesMut::new();
    loop {
        let next = next_chunk(&mut buffer, &mut body, MAX_BODY_BYTES).map_err(|e| match e {
            ChunkError::TooLarge => CallError::Malformed("answer too large"),
            ChunkError::Malformed(why) => CallError::Malformed(why),
        })?;
        match next {
            Chunk::Done => return Ok(body.freeze()),
            Chunk::More => {}
            Chunk::NeedBytes => read_more(connection, &mut buffer).await?,
        }
    }
}

thread_local! {
    /// This thread's idle connections by agent address, with when each went idle. (A
    /// connection belongs to the runtime that made it; the gateway's workers each run one
    /// runtime on one thread.)
    static IDLE_CONNECTIONS: RefCell<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>> =
        RefCell::new(HashMap::new());
}

fn take_idle(addr: SocketAddr) -> Option<TcpStream> {
    // The most recently used one. Connections idle too long are swept when one comes back
    // (see `keep_idle`); one that outlived its agent's patience in a quiet spell fails as
    // stale and is replaced (see `post`), so no clock is read here.
    IDLE_CONNECTIONS.with_borrow_mut(|idle| idle.get_mut(&addr)?.pop().map(|(c, _)| c))
}

/// Keeps `connection` to `addr` for the next request, and closes connections idle too long
/// (to any agent: agents come and go). Each agent's list is oldest first.
fn keep_idle(addr: SocketAddr, connection: TcpStream) {
    let now = Instant::now();
    IDLE_CONNECTIONS.with_borrow_mut(|idle| {
        idle.retain(|_, kept| {
            let expired = kept
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) >= IDLE)
                .count();
            kept.drain(..expired);
            !kept.is_empty()
        });
        let kept = idle.entry(addr).or_default();
        if kept.len() < MAX_IDLE_PER_AGENT {
            kept.push((connection, now));
        }
    });
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    const POST: Post<'static> = Post {
        path: "/v1/completions",
        headers: &[("x-inferpool-priority", "high")],
        body: b"{}",
    };

    /// A loopback server that answers each connection's requests with `answers` in turn
    /// (one request per answer, then it closes the connection), and returns what it read.
    async fn server(
        answers: Vec<Vec<&'static str>>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for connection in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                for answer in connection {
                    let mut buf = vec![0; 4096];
                    let n = socket.read(&mut buf).await.unwrap();
                    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    socket.write_all(answer.as_bytes()).await.unwrap();
                }
            }
            seen
        });
        (addr, task)
    }

    const OK: &str =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";

    #[tokio::test]
    async fn one_write_out_and_a_kept_alive_connection_reused() {
        let (addr, seen) = server(vec![vec![OK, OK]]).await;
        for _ in 0..2 {
            let answer = post(addr, POST).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(answer.content_type.as_deref(), Some("application/json"));
            assert_eq!(&answer.body[..], b"{\"a\":1}");
        }
        let seen = seen.await.unwrap();
        assert_eq!(seen.len(), 2, "both requests on the one connection");
        assert_eq!(
            seen[0],
            format!(
                "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                 content-length: 2\r\nx-inferpool-priority: high\r\n\r\n{{}}"
            )
        );
    }

    #[tokio::test]
    async fn chunked_and_closing_answers() {
        let chunked = "HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n\
                       3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n";
        let closing = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi";
        let (addr, seen) = server(vec![vec![chunked, closing], vec![OK]]).await;
        let answer = post(addr, POST).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (429, &b"abcdefg"[..]));
        assert_eq!(answer.content_type, None);
        let answer = post(addr, POST).await.unwrap();
        assert_eq!(&answer.body[..], b"hi");
        // The server closed the first connection as it said: the next request opens another.
        assert_eq!(post(addr, POST).await.unwrap().status, 200);
        assert_eq!(seen.await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn an_idle_connection_the_agent_closed_is_replaced_once() {
        // The first connection answers once and closes without saying so.
        let (addr, seen) = server(vec![vec![OK], vec![OK]]).await;
        assert_eq!(post(addr, POST).await.unwrap().status, 200);
        assert_eq!(post(addr, POST).await.unwrap().status, 200);
        assert_eq!(seen.await.unwrap().len(), 2);
        // Nothing listens any more: no answer, an error.
        assert!(matches!(post(addr, POST).await, Err(CallError::Connect(_))));
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        let cases = [
            "SMTP ready\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
        ];
        for case in cases {
            let (addr, _seen) = server(vec![vec![case]]).await;
            let got = post(addr, POST).await;
            assert!(
                matches!(got, Err(CallError::Malformed(_))),
                "{case:?}: {got:?}"
            );
        }
        // An answer cut short.
        let (addr, _seen) =
            server(vec![vec!["HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nab"]]).await;
        assert!(matches!(post(addr, POST).await, Err(CallError::Io(_))));
    }
}
