//! HTTP/1.1 chunked bodies, read by the agent client (`http1`) and the front server
//! (`server`), written by the server for answers of unknown length.

use bytes::{Buf as _, BytesMut};

/// What reading the next chunk gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A chunk was moved.
    More,
    /// The last (empty) chunk was read: the body is whole.
    Done,
    /// `buffer` does not hold the next whole chunk yet.
    NeedBytes,
}

/// Why a chunked body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The body would pass its limit.
    #[error("body too large")]
    TooLarge,
    /// Not chunked coding.
    #[error("{0}")]
    Malformed(&'static str),
}

/// Moves the next whole chunk of `buffer` into `body` (of at most `limit` bytes).
pub fn next_chunk(
    buffer: &mut BytesMut,
    body: &mut BytesMut,
    limit: usize,
) -> Result<Chunk, ChunkError> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(Chunk::NeedBytes);
    };
    let line = std::str::from_utf8(&buffer[..line_end]).unwrap_or_default();
    let size_text = line.split(';').next().unwrap_or_default().trim();
    let size = usize::from_str_radix(size_text, 16)
        .map_err(|_| ChunkError::Malformed("bad chunk size"))?;
    if size.saturating_add(body.len()) > limit {
        return Err(ChunkError::TooLarge);
    }
    // The last chunk is followed by (no) trailers and an empty line.
    let whole = line_end + 2 + size + 2;
    if buffer.len() < whole {
        return Ok(Chunk::NeedBytes);
    }
    if &buffer[whole - 2..whole] != b"\r\n" {
        return Err(ChunkError::Malformed("chunk without its line end"));
    }
    body.extend_from_slice(&buffer[line_end + 2..line_end + 2 + size]);
    buffer.advance(whole);
    Ok(if size == 0 { Chunk::Done } else { Chunk::More })
}

/// Appends `data` to `out` as one chunk.
pub fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_as_written() {
        let mut wire = Vec::new();
        put_chunk(&mut wire, b"hello ");
        put_chunk(&mut wire, b"world");
        wire.extend_from_slice(LAST_CHUNK);
        let mut body = BytesMut::new();
        // Byte by byte: every prefix either needs more or moves whole chunks.
        let mut buffer = BytesMut::new();
        let mut done = false;
        for b in wire {
            buffer.extend_from_slice(&[b]);
            loop {
                match next_chunk(&mut buffer, &mut body, 64) {
                    Ok(Chunk::More) => {}
                    Ok(Chunk::Done) => done = true,
                    Ok(Chunk::NeedBytes) | Err(_) => break,
                }
                if done {
                    break;
                }
            }
        }
        assert!(done);
        assert_eq!(&body[..], b"hello world");
        let mut big = BytesMut::from(&b"41\r\n"[..]);
        assert_eq!(
            next_chunk(&mut big, &mut BytesMut::new(), 64),
            Err(ChunkError::TooLarge)
        );
    }
}
