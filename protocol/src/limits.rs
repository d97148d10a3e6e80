//! Limits the gateway and the agent must agree on: the gateway passes whole-completion
//! bodies on to the agent as the client sent them, so a body the gateway takes by default
//! must not be one the agent refuses.

/// Largest request body accepted by default (a long conversation fits many times over):
/// the agent's fixed limit, and the default of the gateway's `--max-body-bytes`.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_body_limit_is_four_mebibytes() {
        // The chart's `gateway.http.maxBodyBytes` default says the same number: changing it
        // here changes what both processes refuse, and the chart must follow.
        assert_eq!(MAX_BODY_BYTES, 4_194_304);
    }
}
