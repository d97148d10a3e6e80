//! Writing one HTTP/1.1 answer: a whole answer, or a body of known length, goes out with
//! its head in one write; any other body (server-sent events) goes chunked, each frame as
//! soon as it is ready.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::FutureExt as _;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::gateway::chunked::{LAST_CHUNK, put_chunk};
use crate::gateway::reply::{Complete, Reply};

/// How the answer is written.
#[derive(Debug, Clone, Copy)]
pub struct Writing {
    /// The request was `HEAD`: the head only.
    pub head_only: bool,
    /// The connection stays open after it.
    pub keep_alive: bool,
}

/// Writes `reply` to `socket`.
pub async fn write_reply<S: AsyncWrite + Unpin>(
    socket: &mut S,
    reply: Reply,
    how: Writing,
) -> std::io::Result<()> {
    match reply {
        Reply::Complete(complete) => socket.write_all(&complete_bytes(&complete, how)).await,
        Reply::Response(response) => write_response(socket, response, how).await,
    }
}

/// A whole answer's bytes: head and body.
fn complete_bytes(complete: &Complete, how: Writing) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + complete.body.len());
    put_status(&mut out, complete.status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(complete.content_type().as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(complete.body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if complete.retry_after {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    put_date(&mut out);
    if !how.keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !how.head_only {
        out.extend_from_slice(&complete.body);
    }
    out
}

/// Writes `response` to `socket`.
async fn write_response<S: AsyncWrite + Unpin>(
    socket: &mut S,
    response: Response,
    how: Writing,
) -> std::io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let bodiless = how.head_only
        || parts.status.is_informational()
        || matches!(
            parts.status,
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    let mut out = Vec::with_capacity(512);
    put_head(&mut out, parts.status, &parts.headers, how.keep_alive);
    if bodiless {
        // The length a GET would have had (axum sets it on answers to HEAD) goes out.
        if how.head_only
            && let Some(length) = parts.headers.get(header::CONTENT_LENGTH)
        {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(length.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        return socket.write_all(&out).await;
    }
    if let Some(length) = body.size_hint().exact() {
        let _ = write!(out, "content-length: {length}\r\n\r\n");
        let whole = body.collect().await.map_err(std::io::Error::other)?;
        out.extend_from_slice(&whole.to_bytes());
        return socket.write_all(&out).await;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    // What is ready goes out in one write (the head with the first frames); the rest as
    // it comes.
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    socket.write_all(&out).await?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.map_err(std::io::Error::other)?.into_data()
            && !data.is_empty()
        {
            put_chunk(&mut out, &data);
        }
    }
    out.extend_from_slice(LAST_CHUNK);
    socket.write_all(&out).await
}

/// The status line and the headers (less those this server sets itself).
fn put_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, keep_alive: bool) {
    put_status(out, status);
    for (name, value) in headers {
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        put_date(out);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
}

fn put_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `date` header of the current second.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn put_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second || text.is_empty() {
            *text = format!("date: {}\r\n", httpdate::fmt_http_date(now));
            *cached = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}
