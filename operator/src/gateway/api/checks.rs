//! What the front door checks before a request reaches an agent: the body (JSON, the
//! `Valid*` request), the priority header, the trace context, and the keys picking uses
//! (prompt prefix, session).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use inferpool_protocol::agent as pb;
use inferpool_protocol::cache::CACHE_CONTROL;
use inferpool_protocol::openai::Message;
use inferpool_protocol::priority::{PRIORITY_HEADER, parse_priority};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::gateway::dispatch::gateway::PoolRoute;

/// How much of the prompt keys prefix affinity.
pub(super) const PREFIX_BYTES: usize = 256;

pub(super) fn parse_json<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// The priority header (`normal` when absent), passed on to the agent.
pub(super) fn priority(headers: &HeaderMap) -> Result<pb::Priority, ApiError> {
    parse_priority(headers.get(PRIORITY_HEADER).map(HeaderValue::as_bytes))
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// The caller's W3C trace context, passed on to the agent (empty when absent or not a
/// plausible `traceparent`).
pub(super) fn traceparent(headers: &HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 55 && v.split('-').count() == 4)
        .unwrap_or_default()
        .to_owned()
}

/// The client's `Cache-Control`, passed on to the agent when it is short, visible ASCII;
/// one that is not is passed on as `no-store`, the strictest reading (it might have said
/// so), never dropped. Empty when absent.
pub(super) fn cache_control(headers: &HeaderMap) -> String {
    let Some(value) = headers.get(CACHE_CONTROL) else {
        return String::new();
    };
    match value.to_str() {
        Ok(v) if v.len() <= 256 && v.bytes().all(|b| (b' '..=b'~').contains(&b)) => v.to_owned(),
        _ => "no-store".to_owned(),
    }
}

/// The first `bytes` of `text` at most, cut on a character boundary.
pub(super) fn prefix_of(text: &str, bytes: usize) -> &str {
    let mut end = text.len().min(bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The start of a conversation's text (its messages' contents, joined), as much as keys
/// prefix affinity.
pub(super) fn chat_prefix(messages: &[Message]) -> String {
    let mut prefix = String::with_capacity(PREFIX_BYTES);
    for m in messages {
        let cut = prefix_of(&m.content, PREFIX_BYTES - prefix.len());
        prefix.push_str(cut);
        if cut.len() < m.content.len() {
            break;
        }
    }
    prefix
}

pub(super) fn session(
    headers: &HeaderMap,
    route: &PoolRoute,
    user: Option<&str>,
) -> Option<String> {
    headers
        .get(route.session_header.as_str())
        .and_then(|v| v.to_str().ok())
        .or(user)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_is_passed_on_and_an_unreadable_one_becomes_no_store() {
        let mut headers = HeaderMap::new();
        assert_eq!(cache_control(&headers), "");
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache, max-age=5"),
        );
        assert_eq!(cache_control(&headers), "no-cache, max-age=5");
        let long = HeaderValue::from_str(&"x".repeat(300)).unwrap();
        headers.insert(CACHE_CONTROL, long);
        assert_eq!(cache_control(&headers), "no-store");
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"no-store\xff").unwrap(),
        );
        assert_eq!(cache_control(&headers), "no-store");
    }

    #[test]
    fn a_plausible_traceparent_is_passed_on_and_junk_is_not() {
        let mut headers = HeaderMap::new();
        assert_eq!(traceparent(&headers), "");
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", HeaderValue::from_static(tp));
        assert_eq!(traceparent(&headers), tp);
        headers.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(traceparent(&headers), "");
    }

    #[test]
    fn priorities_and_prefixes() {
        let mut headers = HeaderMap::new();
        assert_eq!(priority(&headers).ok(), Some(pb::Priority::Normal));
        headers.insert(PRIORITY_HEADER, HeaderValue::from_static("Critical"));
        assert_eq!(priority(&headers).ok(), Some(pb::Priority::Critical));
        headers.insert(PRIORITY_HEADER, HeaderValue::from_static("urgent"));
        assert!(priority(&headers).is_err());
        let long = "é".repeat(200);
        let cut = prefix_of(&long, PREFIX_BYTES);
        assert!(cut.len() <= PREFIX_BYTES && long.starts_with(cut));
        let message = |content: &str| Message {
            role: "user".into(),
            content: content.into(),
        };
        let joined = format!("{long}{long}");
        let messages = [message(&long), message(&long)];
        assert_eq!(chat_prefix(&messages), prefix_of(&joined, PREFIX_BYTES));
        assert_eq!(chat_prefix(&[message("a"), message("b")]), "ab");
        // A message cut inside a character ends the prefix there, as the joined text would.
        let odd = format!("{}{}", "a".repeat(PREFIX_BYTES - 1), "é");
        let cut = chat_prefix(&[message(&odd), message("b")]);
        assert_eq!(cut, prefix_of(&format!("{odd}b"), PREFIX_BYTES));
    }
}
