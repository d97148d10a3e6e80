//! A request's deadline as its caller states it: gRPC's standard `grpc-timeout` metadata
//! (what tonic's `Request::set_timeout` sends: at most 8 digits and a unit), and for HTTP
//! `x-inferpool-timeout-ms`. Both are relative, so the two ends' clocks need not agree.

use std::time::{Duration, Instant};

use crate::serving::error::ServeError;

/// The HTTP header with the milliseconds a client still waits.
pub const TIMEOUT_HEADER: &str = "x-inferpool-timeout-ms";

/// The duration of a `grpc-timeout` value such as `"500m"` or `"30S"`; None when it is not
/// one (a request carrying such a value is refused: see `deadline_of`).
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline from `value` (of the header `name`), read with `parse`, counted from now;
/// a malformed value is a bad request rather than no deadline.
pub fn deadline_of(
    name: &str,
    value: Option<&str>,
    parse: fn(&str) -> Option<Duration>,
) -> Result<Option<Instant>, ServeError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let timeout = parse(value).ok_or_else(|| ServeError::Json(format!("{name}: {value:?}")))?;
    Ok(Instant::now().checked_add(timeout))
}

/// Milliseconds, as `x-inferpool-timeout-ms` carries them.
pub fn millis(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_in_every_unit_and_nothing_else() {
        assert_eq!(grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "1x", "-1m", "1.5S", "é"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_malformed_timeout_is_refused_and_none_means_no_deadline() {
        assert!(matches!(deadline_of("h", None, millis), Ok(None)));
        assert!(matches!(deadline_of("h", Some("250"), millis), Ok(Some(_))));
        assert!(deadline_of("h", Some("soon"), millis).is_err());
    }
}
