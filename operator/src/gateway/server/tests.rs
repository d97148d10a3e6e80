//! The server against raw HTTP/1.1 from a loopback client.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};

use super::*;
use crate::gateway::chunked::{Chunk, next_chunk};

/// Signals when dropped (the handler's future was dropped: its request was cancelled).
struct Dropped(Option<oneshot::Sender<()>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

struct Fixture {
    addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    release: Arc<Notify>,
    slow_started: Arc<Notify>,
    slow_dropped: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
}

async fn fixture() -> Fixture {
    let release = Arc::new(Notify::new());
    let slow_started = Arc::new(Notify::new());
    let slow_dropped = Arc::new(std::sync::Mutex::new(None));
    let (r, s, d) = (release.clone(), slow_started.clone(), slow_dropped.clone());
    let stream = || {
        let frames = ["one ", "two ", "three"].map(|f| Ok::<_, std::io::Error>(Bytes::from(f)));
        Body::from_stream(futures::stream::iter(frames))
    };
    let router = Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/hello", get(|| async { "hi" }))
        .route("/stream", get(move || async move { stream() }))
        .route(
            "/slow",
            post(move || async move {
                let _guard = Dropped(d.lock().unwrap().take());
                s.notify_one();
                r.notified().await;
                "late"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    let served = tokio::spawn(serve(listener, router, stopped));
    Fixture {
        addr,
        stop,
        served,
        release,
        slow_started,
        slow_dropped,
    }
}

/// One answer read off `socket`: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn read_answer(socket: &mut TcpStream, buffer: &mut BytesMut, head_only: bool) -> Answer {
    let (status, headers, len) = loop {
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(len) = parsed.parse(buffer).unwrap() {
            let headers = parsed
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).into_owned();
                    (h.name.to_ascii_lowercase(), value)
                })
                .collect::<Vec<_>>();
            break (parsed.code.unwrap(), headers, len);
        }
        assert!(
            socket.read_buf(buffer).await.unwrap() > 0,
            "closed mid-head"
        );
    };
    let _ = buffer.split_to(len);
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only {
        return answer;
    }
    if answer.header("transfer-encoding") == Some("chunked") {
        let mut body = BytesMut::new();
        loop {
            match next_chunk(buffer, &mut body, 1 << 20).unwrap() {
                Chunk::Done => break,
                Chunk::More => {}
                Chunk::NeedBytes => assert!(socket.read_buf(buffer).await.unwrap() > 0),
            }
        }
        answer.body = body.to_vec();
    } else {
        let n: usize = answer.header("content-length").unwrap().parse().unwrap();
        while buffer.len() < n {
            assert!(
                socket.read_buf(buffer).await.unwrap() > 0,
                "closed mid-body"
            );
        }
        answer.body = buffer.split_to(n).to_vec();
    }
    answer
}

async fn closed(socket: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).await.is_ok() && rest.is_empty()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let f = fixture().await;
    let mut socket = TcpStream::connect(f.addr).await.unwrap();
    let two = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\nhost: x\r\n\r\n";
    socket.write_all(two.as_bytes()).await.unwrap();
    let mut buffer = BytesMut::new();
    let echo = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!((echo.status, &echo.body[..]), (200, &b"hello"[..]));
    assert!(echo.header("date").is_some());
    assert_eq!(echo.header("connection"), None, "kept alive");
    let hello = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(&hello.body[..], b"hi");
    // HEAD: the head with the length, no body; the connection goes on.
    socket
        .write_all(b"HEAD /hello HTTP/1.1\r\nhost: x\r\n\r\nGET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_answer(&mut socket, &mut buffer, true).await;
    assert_eq!(head.header("content-length"), Some("2"));
    let after = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(&after.body[..], b"hi");
    // `connection: close` is honoured.
    socket
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed(&mut socket).await);
}

#[tokio::test]
async fn chunked_bodies_both_ways_and_expect_continue() {
    let f = fixture().await;
    let mut socket = TcpStream::connect(f.addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut buffer = BytesMut::new();
    let interim = read_answer(&mut socket, &mut buffer, true).await;
    assert_eq!(interim.status, 100);
    socket
        .write_all(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
        .await
        .unwrap();
    let echo = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(&echo.body[..], b"abcde");
    socket
        .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let streamed = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(streamed.header("transfer-encoding"), Some("chunked"));
    assert_eq!(&streamed.body[..], b"one two three");
}

#[tokio::test]
async fn unreadable_requests_are_refused_in_the_api_shape_and_closed() {
    let f = fixture().await;
    let many_fields = format!("GET /hello HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(101));
    let cases = [
        ("garbage\r\n\r\n".to_owned(), 400, "invalid_request_error"),
        (
            "POST /echo HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_owned(),
            400,
            "invalid_request_error",
        ),
        (
            "POST /echo HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n".to_owned(),
            400,
            "invalid_request_error",
        ),
        (
            "POST /echo HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n".to_owned(),
            501,
            "unsupported_transfer_encoding",
        ),
        (
            format!(
                "POST /echo HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            ),
            413,
            "request_too_large",
        ),
        (many_fields, 431, "request_header_fields_too_large"),
    ];
    for (request, status, kind) in cases {
        let mut socket = TcpStream::connect(f.addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut socket, &mut BytesMut::new(), false).await;
        assert_eq!(answer.status, status, "{request:?}");
        let error: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(error["error"]["type"], kind, "{request:?}");
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(closed(&mut socket).await, "{request:?}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_cancels_its_request() {
    let f = fixture().await;
    let (tx, rx) = oneshot::channel();
    *f.slow_dropped.lock().unwrap() = Some(tx);
    let mut socket = TcpStream::connect(f.addr).await.unwrap();
    socket
        .write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    drop(socket);
    rx.await.unwrap();
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_finishes_running_requests() {
    let f = fixture().await;
    let mut idle = TcpStream::connect(f.addr).await.unwrap();
    let mut busy = TcpStream::connect(f.addr).await.unwrap();
    let (tx, rx) = oneshot::channel();
    *f.slow_dropped.lock().unwrap() = Some(tx);
    busy.write_all(b"POST /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // The idle connection is served once, so that it is past its accept.
    idle.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = read_answer(&mut idle, &mut BytesMut::new(), false).await;
    f.slow_started.notified().await;
    let _ = f.stop.send(true);
    assert!(closed(&mut idle).await);
    f.release.notify_one();
    let late = read_answer(&mut busy, &mut BytesMut::new(), false).await;
    assert_eq!(&late.body[..], b"late");
    assert_eq!(late.header("connection"), Some("close"));
    rx.await.unwrap();
    f.served.await.unwrap().unwrap();
}

/// Answers whole, from the request as read: its path and its `x-thing` header.
#[derive(Clone)]
struct Whole;

impl Handler for Whole {
    async fn answer(&self, request: RawRequest) -> Reply {
        let body = format!(
            "{} {} {:?} {}",
            request.method(),
            request.path(),
            request.header("X-Thing"),
            request.body.len()
        );
        Reply::Complete(crate::gateway::reply::Complete {
            status: axum::http::StatusCode::TOO_MANY_REQUESTS,
            content_type: Some("text/plain".into()),
            body: body.into(),
            retry_after: true,
        })
    }
}

#[tokio::test]
async fn a_whole_reply_is_written_from_the_request_as_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve(listener, Whole, stopped));
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request =
        "POST /v1/x?y=1 HTTP/1.1\r\nhost: x\r\nx-THING: a b\r\ncontent-length: 3\r\n\r\nabc";
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = BytesMut::new();
    let answer = read_answer(&mut socket, &mut buffer, false).await;
    assert_eq!(answer.status, 429);
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        r#"POST /v1/x Some("a b") 3"#
    );
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.header("date").is_some());
    // HEAD: the length, no body.
    socket
        .write_all(b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let head = read_answer(&mut socket, &mut buffer, true).await;
    assert_eq!(head.header("content-length"), Some("13"));
    assert!(closed(&mut socket).await);
}

#[tokio::test(start_paused = true)]
async fn a_connection_is_idle_after_one_to_two_periods_without_a_request() {
    let start = tokio::time::Instant::now();
    IdleCheck::new().expired().await;
    assert_eq!(start.elapsed(), IDLE, "no request at all");
    let mut idle = IdleCheck::new();
    tokio::time::advance(IDLE / 2).await;
    idle.requests += 1;
    idle.expired().await;
    assert_eq!(
        start.elapsed(),
        IDLE * 3,
        "a request half-way through the first period"
    );
}
