//! The hot call, `Generate`, written straight onto an agent connection: the request is one
//! length-prefixed protobuf message in one DATA frame behind minimal headers, and answers
//! are cut from the DATA frames as they come; the status comes from the trailers (or from
//! a trailers-only answer) as a `tonic::Status`, so errors read exactly as through tonic's
//! client. This skips tonic's per-call work (request and metadata wrappers, its default
//! headers, an 8 KiB encode and decode buffer per call). `Embed` keeps tonic's client.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderValue, Method, Request};
use inferpool_protocol::agent::{GenerateRequest, GenerateResponse};
use prost::Message as _;
use tonic::{Code, Status};

use super::connection::AgentConnection;

const GENERATE: &str = "/inferpool.agent.v1.Agent/Generate";
const GRPC_STATUS: &str = "grpc-status";
const GRPC_DETAILS: &str = "grpc-status-details-bin";
/// Status details as tonic decodes them (standard alphabet, padding optional).
const DETAILS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// A gRPC message's prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;
/// The largest answer message accepted (tonic's default limit).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// An agent's answers to one `Generate` call.
#[derive(Debug)]
pub struct GenerateStream {
    body: h2::RecvStream,
    buffer: BytesMut,
    ended: bool,
    /// The answer's headers already said OK (a trailers-only answer): no trailers follow.
    ok_in_headers: bool,
}

/// Calls `Generate`: the answers once the agent accepted, or its refusal.
pub async fn generate(
    connection: &AgentConnection,
    request: &GenerateRequest,
) -> Result<GenerateStream, Status> {
    let mut send = connection.ready_sender().await.map_err(transport)?;
    let uri = connection
        .uri(GENERATE)
        .map_err(|e| Status::internal(e.to_string()))?;
    let head = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .header(TE, HeaderValue::from_static("trailers"))
        .body(())
        .map_err(|e| Status::internal(e.to_string()))?;
    let (response, mut body) = send.send_request(head, false).map_err(transport)?;
    body.send_data(framed(request)?, true).map_err(transport)?;
    let response = response.await.map_err(transport)?;
    if !response.status().is_success() {
        return Err(Status::unavailable(format!("HTTP {}", response.status())));
    }
    // An answer of headers only carries its status there (a refusal).
    if let Some(status) = failure(response.headers()) {
        return Err(status);
    }
    let ok_in_headers = response.headers().contains_key(GRPC_STATUS);
    Ok(GenerateStream {
        body: response.into_body(),
        buffer: BytesMut::new(),
        ended: false,
        ok_in_headers,
    })
}

/// `message` behind a gRPC prefix (uncompressed).
fn framed(message: &GenerateRequest) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let too_large = || Status::out_of_range(format!("a request of {len} bytes"));
    let prefix_len = u32::try_from(len).map_err(|_| too_large())?;
    let mut out = Vec::with_capacity(PREFIX + len);
    out.push(0);
    out.extend_from_slice(&prefix_len.to_be_bytes());
    message.encode(&mut out).map_err(|_| too_large())?;
    Ok(out.into())
}

/// The status in `headers` unless it is OK or absent.
fn failure(headers: &HeaderMap) -> Option<Status> {
    let code = headers.get(GRPC_STATUS)?;
    if code.as_bytes() == b"0" {
        return None;
    }
    let status = if undecodable_details(headers) {
        let mut headers = headers.clone();
        drop_undecodable_details(&mut headers);
        Status::from_header_map(&headers)
    } else {
        Status::from_header_map(headers)
    };
    status.filter(|s| s.code() != Code::Ok)
}

fn undecodable_details(headers: &HeaderMap) -> bool {
    headers
        .get(GRPC_DETAILS)
        .is_some_and(|d| DETAILS_BASE64.decode(d.as_bytes()).is_err())
}

/// Removes status details that tonic could not decode: `Status::from_header_map` panics on
/// them (which would take the caller's task down); the code and message remain.
pub(super) fn drop_undecodable_details(headers: &mut HeaderMap) {
    if undecodable_details(headers) {
        headers.remove(GRPC_DETAILS);
    }
}

/// A broken connection or stream reads as the agent being unavailable (retried elsewhere
/// while nothing was streamed).
fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("agent connection: {e}"))
}

/// A whole message from the front of `buffer`, if one is there.
fn cut(buffer: &mut BytesMut) -> Result<Option<GenerateResponse>, Status> {
    let Some(prefix) = buffer.get(..PREFIX) else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(Status::internal("compressed answers are not supported"));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(Status::out_of_range(format!("an answer of {len} bytes")));
    }
    if buffer.len() < PREFIX + len {
        return Ok(None);
    }
    buffer.advance(PREFIX);
    let message = buffer.split_to(len);
    GenerateResponse::decode(message.freeze())
        .map(Some)
        .map_err(|e| Status::internal(format!("an undecodable answer: {e}")))
}

impl GenerateStream {
    /// The next answer; `None` once the agent ended the call with OK.
    pub async fn message(&mut self) -> Result<Option<GenerateResponse>, Status> {
        loop {
            if let Some(message) = cut(&mut self.buffer)? {
                return Ok(Some(message));
            }
            if self.ended {
                return self.status().await;
            }
            match self.body.data().await {
                Some(Ok(data)) => {
                    let _ = self.body.flow_control().release_capacity(data.len());
                    self.buffer.extend_from_slice(&data);
                }
                Some(Err(e)) => return Err(transport(e)),
                None => self.ended = true,
            }
        }
    }

    /// The call's end: OK, or the status in the trailers.
    async fn status(&mut self) -> Result<Option<GenerateResponse>, Status> {
        if !self.buffer.is_empty() {
            return Err(Status::internal("the answer stream ended inside a message"));
        }
        if self.ok_in_headers {
            return Ok(None);
        }
        match self.body.trailers().await.map_err(transport)? {
            Some(trailers) => match failure(&trailers) {
                Some(status) => Err(status),
                None if trailers.contains_key(GRPC_STATUS) => Ok(None),
                None => Err(Status::internal("trailers without grpc-status")),
            },
            None => Err(Status::internal("the answer stream ended without a status")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> GenerateResponse {
        GenerateResponse {
            text: text.into(),
            ..GenerateResponse::default()
        }
    }

    /// `message` framed as an agent sends it.
    fn frame(message: &GenerateResponse) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn answers_are_cut_whole_however_the_frames_split_them() {
        let wire = [frame(&answer("Hello")), frame(&answer(", world"))].concat();
        let mut buffer = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buffer.extend_from_slice(&[byte]);
            while let Some(m) = cut(&mut buffer).unwrap() {
                got.push(m.text);
            }
        }
        assert_eq!(got, ["Hello", ", world"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn compressed_or_oversized_answers_are_refused() {
        let mut compressed = BytesMut::from(&frame(&answer("x"))[..]);
        compressed[0] = 1;
        assert_eq!(cut(&mut compressed).unwrap_err().code(), Code::Internal);
        let mut huge = BytesMut::from(&[0, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(cut(&mut huge).unwrap_err().code(), Code::OutOfRange);
    }

    #[test]
    fn a_request_is_one_prefixed_message() {
        let request = GenerateRequest {
            model: "m".into(),
            ..GenerateRequest::default()
        };
        let wire = framed(&request).unwrap();
        assert_eq!(wire[0], 0);
        assert_eq!(
            wire[1..5],
            u32::try_from(request.encoded_len()).unwrap().to_be_bytes()
        );
        assert_eq!(GenerateRequest::decode(&wire[5..]).unwrap(), request);
    }

    #[test]
    fn the_status_comes_from_grpc_status_and_ok_is_no_failure() {
        let mut headers = HeaderMap::new();
        assert!(failure(&headers).is_none());
        headers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        assert!(failure(&headers).is_none());
        headers.insert(GRPC_STATUS, HeaderValue::from_static("8"));
        headers.insert("grpc-message", HeaderValue::from_static("queue%20full"));
        let status = failure(&headers).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (Code::ResourceExhausted, "queue full")
        );
        let details = DETAILS_BASE64.encode(b"typed");
        headers.insert(GRPC_DETAILS, HeaderValue::from_str(&details).unwrap());
        assert_eq!(failure(&headers).unwrap().details(), b"typed");
        // Undecodable details from an agent are dropped rather than taking the worker down.
        headers.insert(GRPC_DETAILS, HeaderValue::from_static("not base64!"));
        let status = failure(&headers).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.details().is_empty());
    }
}
