use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the gateway spreads requests over the pool's agents.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// How an agent is picked for each request.
    #[serde(default)]
    pub strategy: RoutingStrategy,

    /// Stop sending to an agent that keeps failing, and probe it again after a cool-down.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,

    /// Retrying requests that failed before their first token, on another agent.
    #[serde(default)]
    pub retry: RetrySpec,

    /// Longest a request may take from arrival to its last token, in seconds.
    #[serde(default = "default_request_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub request_timeout_seconds: i32,

    /// Header naming a client session, for `session_affinity` (the OpenAI `user` field is
    /// used when the header is absent).
    #[serde(default = "default_session_header")]
    #[schemars(length(min = 1, max = 256))]
    pub session_header: String,

    /// Most requests one gateway holds for the pool while it has no ready agent (scaled to
    /// zero, or every agent restarting): each waits, by priority, until an agent serves or
    /// its `requestTimeoutSeconds` passes (then `503 pool_scaling` with `Retry-After`).
    /// Past the limit a request is answered that at once; 0 holds none.
    #[serde(default = "default_max_held_requests")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_held_requests: i32,
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            strategy: RoutingStrategy::default(),
            circuit_breaker: CircuitBreakerSpec::default(),
            retry: RetrySpec::default(),
            request_timeout_seconds: default_request_timeout(),
            session_header: default_session_header(),
            max_held_requests: default_max_held_requests(),
        }
    }
}

fn default_request_timeout() -> i32 {
    300
}
fn default_max_held_requests() -> i32 {
    256
}
fn default_session_header() -> String {
    "x-session-id".to_owned()
}

/// How the gateway picks an agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStrategy {
    /// Each agent in turn.
    RoundRobin,
    /// The agent with the fewest requests in flight from this gateway (in pools of more
    /// than 8 agents, the less busy of two drawn at random, which spreads gateways apart).
    LeastConnections,
    /// In proportion to each agent's reported capacity.
    Weighted,
    /// The agent with the least reported load (queue, running sequences, KV-cache use),
    /// corrected by this gateway's requests in flight (in pools of more than 8 agents, the
    /// less loaded of two drawn at random, so that gateways reading the same reports do not
    /// all send to one agent).
    #[default]
    LeastLoad,
    /// Requests sharing a prompt prefix go to the same agent (consistent hashing with
    /// bounded load), where the prefix is cached.
    PrefixAffinity,
    /// Requests of one session stay on one agent, with bounded load.
    SessionAffinity,
}

/// Circuit breaking per agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Consecutive failures that open the circuit.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: i32,

    /// Seconds an open circuit waits before one probe request is let through.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 1, max = 3600))]
    pub cooldown_seconds: i32,
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            cooldown_seconds: default_cooldown(),
        }
    }
}

fn default_failure_threshold() -> i32 {
    5
}
fn default_cooldown() -> i32 {
    10
}

/// Retries of requests that failed before the first token was streamed. A request is
/// never retried once streaming began.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Most retries of one request.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: i32,

    /// Retries allowed as a percentage of recent requests, so that retries cannot multiply
    /// load during an outage.
    #[serde(default = "default_budget_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub budget_percent: i32,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            budget_percent: default_budget_percent(),
        }
    }
}

fn default_max_retries() -> i32 {
    2
}
fn default_budget_percent() -> i32 {
    20
}
