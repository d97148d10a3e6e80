//! Reading one HTTP/1.1 request from a connection: its head (httparse) and its body
//! (`content-length` or chunked), with the limits and refusals of a public server.

use axum::body::Body;
use std::ops::Range;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::gateway::chunked::{Chunk, ChunkError, next_chunk};

/// Largest request head.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in a request.
const MAX_HEADERS: usize = 100;

/// Why a request could not be read; each is answered (then the connection closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not HTTP/1.x, or framed ambiguously.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head is too large.
    #[error("request head too large")]
    HeadTooLarge,
    /// The body is larger than the server takes.
    #[error("request body too large")]
    BodyTooLarge,
    /// A transfer coding other than chunked.
    #[error("unsupported transfer-encoding")]
    UnsupportedCoding,
}

impl BadRequest {
    /// The answer's status.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::HeadTooLarge => 431,
            Self::BodyTooLarge => 413,
            Self::UnsupportedCoding => 501,
        }
    }

    /// The answer's error type.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_request_error",
            Self::HeadTooLarge => "request_header_fields_too_large",
            Self::BodyTooLarge => "request_too_large",
            Self::UnsupportedCoding => "unsupported_transfer_encoding",
        }
    }
}

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// A request head as read: its bytes, and where its parts lie in them (no header map is
/// built unless the router needs one; see `RawRequest::into_http`).
#[derive(Debug)]
pub struct Head {
    bytes: Bytes,
    method: Method,
    http11: bool,
    target: Range<usize>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    framing: Framing,
    expect_continue: bool,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
}

impl Head {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The values of the header fields named `name` (case-insensitive), in order.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.fields.iter().filter_map(move |(n, v)| {
            let field = &self.bytes[n.clone()];
            field
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| &self.bytes[v.clone()])
        })
    }

    /// Whether a comma-separated header lists `token`.
    fn lists(&self, name: &str, token: &str) -> bool {
        self.values(name).any(|v| {
            std::str::from_utf8(v)
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }
}

/// A request as read, with its body.
#[derive(Debug)]
pub struct RawRequest {
    head: Head,
    /// The body.
    pub body: Bytes,
}

impl RawRequest {
    /// The method.
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request target's path (without the query).
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    fn target(&self) -> &str {
        std::str::from_utf8(&self.head.bytes[self.head.target.clone()]).unwrap_or_default()
    }

    /// The first value of header `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let value = self.head.values(name).next()?;
        std::str::from_utf8(value).ok()
    }

    /// The request as the router takes it.
    pub fn into_http(self) -> Result<Request<Body>, BadRequest> {
        let malformed = BadRequest::Malformed;
        let mut headers = HeaderMap::with_capacity(self.head.fields.len());
        for (name, value) in &self.head.fields {
            let bytes = &self.head.bytes;
            let name =
                HeaderName::from_bytes(&bytes[name.clone()]).map_err(|_| malformed("name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone()))
                .map_err(|_| malformed("value"))?;
            headers.append(name, value);
        }
        let version = if self.head.http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut request = Request::builder()
            .method(self.head.method.clone())
            .uri(self.target())
            .version(version)
            .body(Body::from(self.body))
            .map_err(|_| malformed("bad target"))?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request is refused.
    #[error(transparent)]
    Bad(#[from] BadRequest),
    /// The connection failed or closed mid-request.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// The next request's head; `None` when the client closed the connection between
/// requests.
pub async fn read_head<S: AsyncRead + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
) -> Result<Option<Head>, ReadError> {
    loop {
        if !buffer.is_empty()
            && let Some(head) = parse_head(buffer)?
        {
            return Ok(Some(head));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(BadRequest::HeadTooLarge.into());
        }
        if socket.read_buf(buffer).await? == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

/// The head, taken off the front of `buffer` once it holds all of it.
fn parse_head(buffer: &mut BytesMut) -> Result<Option<Head>, BadRequest> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::HeadTooLarge),
        Err(_) => return Err(BadRequest::Malformed("not an HTTP/1.x request")),
    };
    let base = buffer.as_ptr() as usize;
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| BadRequest::Malformed("bad method"))?;
    let target = at(parsed.path.unwrap_or("/").as_bytes());
    let fields = parsed
        .headers
        .iter()
        .map(|f| (at(f.name.as_bytes()), at(f.value)))
        .collect();
    let http11 = parsed.version == Some(1);
    let mut head = Head {
        bytes: buffer.split_to(len).freeze(),
        method,
        http11,
        target,
        fields,
        framing: Framing::Length(0),
        expect_continue: false,
        keep_alive: false,
    };
    head.framing = framing(&head)?;
    head.keep_alive = if http11 {
        !head.lists("connection", "close")
    } else {
        head.lists("connection", "keep-alive")
    };
    head.expect_continue = head.lists("expect", "100-continue");
    Ok(Some(head))
}

/// The body's framing; a request with both a length and a transfer coding, or with two
/// different lengths, is refused (it could be read two ways: request smuggling).
fn framing(head: &Head) -> Result<Framing, BadRequest> {
    let codings: Vec<&[u8]> = head.values("transfer-encoding").collect();
    let mut lengths = head.values("content-length").peekable();
    if !codings.is_empty() {
        if lengths.peek().is_some() {
            return Err(BadRequest::Malformed(
                "both content-length and transfer-encoding",
            ));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(BadRequest::UnsupportedCoding),
        };
    }
    let mut length = None;
    for value in lengths {
        let n = std::str::from_utf8(value)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or(BadRequest::Malformed("bad content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(BadRequest::Malformed("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// Reads the body of `head` (at most `limit` bytes) and makes the request.
pub async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
    head: Head,
    limit: usize,
) -> Result<RawRequest, ReadError> {
    let needs_body = head.framing != Framing::Length(0);
    if let Framing::Length(n) = head.framing
        && n > limit
    {
        return Err(BadRequest::BodyTooLarge.into());
    }
    if head.expect_continue && needs_body && buffer.is_empty() {
        socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let body = match head.framing {
        Framing::Length(n) => read_exactly(socket, buffer, n).await?,
        Framing::Chunked => read_chunked(socket, buffer, limit).await?,
    };
    Ok(RawRequest { head, body })
}

async fn read_more<S: AsyncRead + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
) -> Result<(), ReadError> {
    if socket.read_buf(buffer).await? == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(())
}

async fn read_exactly<S: AsyncRead + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
    n: usize,
) -> Result<bytes::Bytes, ReadError> {
    buffer.reserve(n.saturating_sub(buffer.len()));
    while buffer.len() < n {
        read_more(socket, buffer).await?;
    }
    Ok(buffer.split_to(n).freeze())
}

async fn read_chunked<S: AsyncRead + Unpin>(
    socket: &mut S,
    buffer: &mut BytesMut,
    limit: usize,
) -> Result<bytes::Bytes, ReadError> {
    let mut body = BytesMut::new();
    loop {
        let next = next_chunk(buffer, &mut body, limit).map_err(|e| match e {
            ChunkError::TooLarge => BadRequest::BodyTooLarge,
            ChunkError::Malformed(why) => BadRequest::Malformed(why),
        })?;
        match next {
            Chunk::Done => return Ok(body.freeze()),
            Chunk::More => {}
            // A chunk-size line never ends: no more than a head's worth of it is read.
            Chunk::NeedBytes if buffer.len() > limit + MAX_HEAD_BYTES => {
                return Err(BadRequest::BodyTooLarge.into());
            }
            Chunk::NeedBytes => read_more(socket, buffer).await?,
        }
    }
}

impl crate::gateway::checks::Headers for RawRequest {
    fn text(&self, name: &str) -> Option<&str> {
        self.header(name)
    }
}
