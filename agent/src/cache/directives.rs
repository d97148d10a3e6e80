//! A request's `Cache-Control` header, as far as the response cache obeys it: `no-cache`
//! (answer afresh, but store the new answer), `no-store` (neither look up nor store) and
//! `max-age=N` (an entry older than N seconds is not good enough). Anything else is
//! ignored, as HTTP caches ignore directives they do not know.

use std::time::Duration;

pub use inferpool_protocol::cache::CACHE_CONTROL;

/// What a request allows the response cache to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// Skip the lookup.
    pub no_cache: bool,
    /// Skip the lookup and do not store the answer.
    pub no_store: bool,
    /// The oldest entry the client accepts.
    pub max_age: Option<Duration>,
}

impl CacheDirectives {
    /// The directives in a `Cache-Control` value (none when absent). Directive names are
    /// case-insensitive; an unreadable `max-age` counts as 0 (RFC 9111 5.2.1.1 asks for
    /// the strictest reading of a malformed value).
    pub fn parse(value: Option<&str>) -> Self {
        let mut out = Self::default();
        for directive in value.unwrap_or_default().split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "max-age" => {
                    let seconds = arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
                    out.max_age = Some(Duration::from_secs(seconds));
                }
                _ => {}
            }
        }
        out
    }

    /// Whether the cache may answer.
    pub fn may_look_up(&self) -> bool {
        !(self.no_cache || self.no_store)
    }

    /// Whether the answer may be kept.
    pub fn may_store(&self) -> bool {
        !self.no_store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_case_insensitively_and_unknown_ones_ignored() {
        let d = CacheDirectives::parse(Some("No-Cache, private, MAX-AGE=\"30\""));
        assert!(d.no_cache && !d.no_store);
        assert_eq!(d.max_age, Some(Duration::from_secs(30)));
        assert!(!d.may_look_up() && d.may_store());
        let d = CacheDirectives::parse(Some("no-store"));
        assert!(!d.may_look_up() && !d.may_store());
        assert_eq!(CacheDirectives::parse(None), CacheDirectives::default());
        assert!(CacheDirectives::parse(Some("")).may_look_up());
    }

    #[test]
    fn a_malformed_max_age_is_the_strictest() {
        let d = CacheDirectives::parse(Some("max-age=soon"));
        assert_eq!(d.max_age, Some(Duration::ZERO));
        assert_eq!(
            CacheDirectives::parse(Some("max-age")).max_age,
            Some(Duration::ZERO)
        );
    }
}
