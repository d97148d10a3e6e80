//! Usage per API key, named by the key's id (never the key): requests by outcome and the
//! tokens charged to each key; refusals that name no key by reason. Every label value
//! comes from a fixed set or from the key file's ids, never from request text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyOutcome {
    key_id: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyId {
    key_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

/// The families.
#[derive(Debug, Default)]
pub struct KeyMetrics {
    requests: Family<KeyOutcome, Counter>,
    tokens: Family<KeyId, Counter>,
    unauthenticated: Family<Reason, Counter>,
}

impl KeyMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        let requests = "Requests by API key id and outcome (admitted, model_not_allowed, \
            over_requests_quota, over_tokens_quota)";
        r.register("key_requests", requests, self.requests.clone());
        let tokens = "Tokens charged to each API key id (the admission estimate)";
        r.register("key_tokens", tokens, self.tokens.clone());
        let refused = "Requests refused for want of a valid API key, by reason (missing, unknown)";
        r.register(
            "unauthenticated_requests",
            refused,
            self.unauthenticated.clone(),
        );
    }

    /// A request of key `id` admitted and charged `tokens`.
    pub fn admitted(&self, id: &str, tokens: u32) {
        self.outcome(id, "admitted");
        let key_id = id.to_owned();
        self.tokens
            .get_or_create(&KeyId { key_id })
            .inc_by(u64::from(tokens));
    }

    /// A request of key `id` refused with `outcome` (one of the fixed names above).
    pub fn outcome(&self, id: &str, outcome: &'static str) {
        let labels = KeyOutcome {
            key_id: id.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// A request refused without a valid key: `missing` or `unknown`.
    pub fn unauthenticated(&self, reason: &'static str) {
        let reason = reason.to_owned();
        self.unauthenticated.get_or_create(&Reason { reason }).inc();
    }
}
