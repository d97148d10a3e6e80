//! Guards tonic's client against an agent's malformed status details: tonic's
//! `Status::from_header_map` panics on a `grpc-status-details-bin` that is not base64,
//! which would take the request's task down. The agent client's service drops such
//! details from answer headers and trailers before tonic reads them (code and message
//! stay).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt as _;
use http_body_util::combinators::MapFrame;
use inferpool_protocol::agent::agent_client::AgentClient;
use tonic::transport::Channel;
use tower::ServiceExt as _;
use tower::util::MapResponse;

const GRPC_DETAILS: &str = "grpc-status-details-bin";
/// Status details as tonic decodes them (standard alphabet, padding optional).
const DETAILS_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An answer's body with its trailers checked.
pub type CheckedBody = MapFrame<tonic::body::Body, fn(Frame<Bytes>) -> Frame<Bytes>>;
/// A channel whose answers are checked.
pub type CheckedChannel =
    MapResponse<Channel, fn(http::Response<tonic::body::Body>) -> http::Response<CheckedBody>>;

/// The agent's gRPC client over `channel`, its answers checked.
pub fn client(channel: Channel) -> AgentClient<CheckedChannel> {
    let check: fn(http::Response<tonic::body::Body>) -> http::Response<CheckedBody> = checked;
    AgentClient::new(channel.map_response(check))
}

fn checked(mut response: http::Response<tonic::body::Body>) -> http::Response<CheckedBody> {
    drop_undecodable_details(response.headers_mut());
    let frames: fn(Frame<Bytes>) -> Frame<Bytes> = checked_frame;
    response.map(|body| body.map_frame(frames))
}

fn checked_frame(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            drop_undecodable_details(&mut trailers);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// Removes status details that are not base64 (padding optional, as tonic decodes).
pub fn drop_undecodable_details(headers: &mut HeaderMap) {
    let bad = headers
        .get(GRPC_DETAILS)
        .is_some_and(|d| DETAILS_BASE64.decode(d.as_bytes()).is_err());
    if bad {
        headers.remove(GRPC_DETAILS);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn only_undecodable_details_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_DETAILS, HeaderValue::from_static("dHlwZWQ"));
        drop_undecodable_details(&mut headers);
        assert!(
            headers.contains_key(GRPC_DETAILS),
            "unpadded base64 is fine"
        );
        headers.insert(GRPC_DETAILS, HeaderValue::from_static("not base64!"));
        drop_undecodable_details(&mut headers);
        assert!(!headers.contains_key(GRPC_DETAILS));
    }
}
