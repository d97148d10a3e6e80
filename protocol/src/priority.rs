//! The priority header, read the same way by the gateway (from its clients) and the agent
//! (from the gateway, or from a client that calls it directly): one spelling of the names,
//! one answer to a missing or unknown value.

use crate::agent::Priority;

/// The header that carries a request's priority.
pub const PRIORITY_HEADER: &str = "x-inferpool-priority";

/// The priorities a header may name, most urgent first.
const NAMED: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

/// A priority header that names no priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{PRIORITY_HEADER}: unknown priority {0:?}")]
pub struct UnknownPriority(pub String);

/// The priority a header `value` asks for: `normal` when there is none, the named one in
/// any case (`High`, `HIGH`), an error for anything else (bytes that are not text
/// included: a client that sent them meant something, and guessing `normal` would hide it).
pub fn parse_priority(value: Option<&[u8]>) -> Result<Priority, UnknownPriority> {
    let Some(value) = value else {
        return Ok(Priority::Normal);
    };
    NAMED
        .into_iter()
        .find(|p| priority_name(*p).as_bytes().eq_ignore_ascii_case(value))
        .ok_or_else(|| UnknownPriority(String::from_utf8_lossy(value).into_owned()))
}

/// The header's spelling of `priority` (unspecified is `normal`, as the agent treats it).
pub fn priority_name(priority: Priority) -> &'static str {
    match priority {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Unspecified | Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_is_normal_and_names_match_in_any_case() {
        assert_eq!(parse_priority(None), Ok(Priority::Normal));
        assert_eq!(parse_priority(Some(b"Critical")), Ok(Priority::Critical));
        assert_eq!(parse_priority(Some(b"HIGH")), Ok(Priority::High));
        assert_eq!(parse_priority(Some(b"normal")), Ok(Priority::Normal));
        assert_eq!(parse_priority(Some(b"low")), Ok(Priority::Low));
    }

    #[test]
    fn every_name_reads_back_as_its_priority() {
        for p in NAMED {
            assert_eq!(parse_priority(Some(priority_name(p).as_bytes())), Ok(p));
        }
        assert_eq!(priority_name(Priority::Unspecified), "normal");
    }

    #[test]
    fn anything_else_is_refused_with_what_was_sent() {
        let e = parse_priority(Some(b"Urgent")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x-inferpool-priority: unknown priority \"Urgent\""
        );
        assert!(parse_priority(Some(b"")).is_err());
        assert!(parse_priority(Some(b" high")).is_err());
        assert!(parse_priority(Some(b"unspecified")).is_err());
        let e = parse_priority(Some(b"hi\xffgh")).unwrap_err();
        assert_eq!(e.0, "hi\u{fffd}gh");
    }
}
