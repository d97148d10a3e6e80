//! Server-sent events as OpenAI streams them: each chunk a `data:` event of JSON, the end
//! a `data: [DONE]` event. The agent and the gateway both stream answers and a client may
//! talk to either, so both frame their events here, byte for byte the same.

use prost::bytes::{BufMut as _, Bytes, BytesMut};

/// The headers of an event-stream answer.
pub const HEADERS: [(&str, &str); 2] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
];

/// The event that ends a stream.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// One event carrying `data` (a chunk's JSON). A line break in `data` would end the field
/// early, so each one goes on with a new `data:` line (clients join them with the break);
/// compact JSON has none.
pub fn event(data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    out.put_slice(b"data: ");
    let mut rest = data.as_bytes();
    while let Some(at) = rest.iter().position(|b| matches!(b, b'\r' | b'\n')) {
        out.put_slice(&rest[..=at]);
        out.put_slice(b"data: ");
        rest = &rest[at + 1..];
    }
    out.put_slice(rest);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The `[DONE]` event that ends every stream, after its last chunk or its error.
pub fn done() -> Bytes {
    Bytes::from_static(DONE)
}

/// A comment (clients skip it): keeps a quiet stream's connection in use. Each line of
/// `text` is a comment line of its own.
pub fn comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 4);
    for line in text.split(['\r', '\n']) {
        out.put_slice(b": ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_chunk_is_one_data_event() {
        assert_eq!(&event(r#"{"id":"x"}"#)[..], b"data: {\"id\":\"x\"}\n\n");
    }

    #[test]
    fn line_breaks_continue_the_data_on_new_lines() {
        assert_eq!(&event("a\nb")[..], b"data: a\ndata: b\n\n");
        assert_eq!(&event("a\r\nb")[..], b"data: a\rdata: \ndata: b\n\n");
    }

    #[test]
    fn the_stream_ends_with_done() {
        assert_eq!(&done()[..], b"data: [DONE]\n\n");
        assert_eq!(done(), event("[DONE]"));
    }

    #[test]
    fn comments_are_colon_lines() {
        assert_eq!(&comment("keep-alive")[..], b": keep-alive\n\n");
        assert_eq!(&comment("")[..], b": \n\n");
        assert_eq!(&comment("a\nb")[..], b": a\n: b\n\n");
    }

    #[test]
    fn the_headers_name_the_event_stream() {
        assert_eq!(HEADERS[0], ("content-type", "text/event-stream"));
        assert_eq!(HEADERS[1], ("cache-control", "no-cache"));
    }
}
