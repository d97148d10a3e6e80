//! Requests the gateways hold for a pool, as they tell the leader: each gateway replica
//! owns one annotation on the pool, `held.inferpool.dev/<gateway>`, valued
//! `<count> <unix seconds>`, written when its count changes and refreshed while it holds
//! any; at 0 it removes its annotation. The leader sums the fresh ones, so that a gateway
//! that died without clearing its own stops counting after `FRESH_FOR`. Plain values here;
//! the gateway writes them (`gateway_demand`) and the autoscaler reads them.

use std::collections::BTreeMap;

/// The annotations' prefix.
pub const HELD_PREFIX: &str = "held.inferpool.dev/";

/// How long a gateway's count stands without a refresh.
pub const FRESH_FOR_SECONDS: u64 = 30;

/// How often a gateway refreshes a count above 0 (well within `FRESH_FOR_SECONDS`).
pub const REFRESH_SECONDS: u64 = 10;

/// The annotation key of gateway `identity` (a pod name, cut to a valid name part).
pub fn held_key(identity: &str) -> String {
    let name: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    format!(
        "{HELD_PREFIX}{}",
        if name.is_empty() { "gateway" } else { name }
    )
}

/// The annotation's value for `count` requests held at `now` (unix seconds).
pub fn held_value(count: u32, now: u64) -> String {
    format!("{count} {now}")
}

/// Requests held for a pool with `annotations`, over the gateways whose count is fresh at
/// `now` (unix seconds). Malformed values count for nothing.
pub fn held_requests(annotations: &BTreeMap<String, String>, now: u64) -> u32 {
    annotations
        .iter()
        .filter(|(k, _)| k.starts_with(HELD_PREFIX))
        .filter_map(|(_, v)| {
            let (count, at) = v.split_once(' ')?;
            let (count, at) = (count.parse::<u32>().ok()?, at.parse::<u64>().ok()?);
            (now.saturating_sub(at) <= FRESH_FOR_SECONDS).then_some(count)
        })
        .fold(0u32, u32::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_counts_of_every_gateway_add_up_and_stale_or_malformed_ones_do_not() {
        let now = 1_000_000;
        let annotations: BTreeMap<String, String> = [
            (held_key("gw-a"), held_value(3, now - 5)),
            (held_key("gw-b"), held_value(4, now)),
            (
                held_key("gw-dead"),
                held_value(50, now - FRESH_FOR_SECONDS - 1),
            ),
            (held_key("gw-bad"), "lots".to_owned()),
            ("other.io/x".to_owned(), held_value(9, now)),
        ]
        .into_iter()
        .collect();
        assert_eq!(held_requests(&annotations, now), 7);
        assert_eq!(held_requests(&BTreeMap::new(), now), 0);
    }

    #[test]
    fn keys_are_valid_annotation_names_whatever_the_identity() {
        assert_eq!(held_key("gw-7d9f-x2"), "held.inferpool.dev/gw-7d9f-x2");
        assert_eq!(held_key("host:1234"), "held.inferpool.dev/host-1234");
        assert_eq!(held_key("///"), "held.inferpool.dev/gateway");
        let long = held_key(&"a".repeat(300));
        assert_eq!(long.len(), HELD_PREFIX.len() + 63);
    }
}
