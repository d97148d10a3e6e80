//! Per-key quotas: requests and tokens per minute as token buckets that refill evenly
//! (a minute's allowance at most, so a quiet key can burst to its per-minute limit, never
//! beyond). A request is admitted only if every bucket has room; otherwise it is told when
//! to retry. Tokens are charged at admission from an estimate (the prompt's bytes over
//! four plus `max_tokens`), as OpenAI's own limits are: the answer's length is not known
//! until it ends. Plain values and instants, tested without a clock.

use std::time::{Duration, Instant};

use super::keys::Limits;

/// A bucket of `capacity` that refills `capacity` per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    capacity: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    fn per_minute(limit: u32, now: Instant) -> Self {
        let capacity = f64::from(limit);
        Self {
            capacity,
            level: capacity,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.capacity / 60.0).min(self.capacity);
        self.at = now;
    }

    /// How long until `n` fits; zero if it does now.
    fn wait_for(&self, n: f64) -> Duration {
        if n <= self.level {
            return Duration::ZERO;
        }
        if n > self.capacity || self.capacity <= 0.0 {
            // Never fits in a minute's allowance: retry after a whole minute, by when the
            // limit may have been raised.
            return Duration::from_secs(60);
        }
        Duration::from_secs_f64((n - self.level) * 60.0 / self.capacity)
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl Exceeded {
    /// Its name in answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// A refusal: which limit, and when a retry would be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    /// The limit.
    pub exceeded: Exceeded,
    /// The wait, rounded up to whole seconds (at least 1).
    pub retry_after: Duration,
}

/// One key's buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    limits: Limits,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Quota {
    /// Full buckets for `limits`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            requests: limits.requests.map(|l| Bucket::per_minute(l, now)),
            tokens: limits.tokens.map(|l| Bucket::per_minute(l, now)),
        }
    }

    /// The limits the buckets were made for.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits one request estimated at `tokens` (charging both buckets), or refuses it
    /// charging neither.
    pub fn admit(&mut self, tokens: u32, now: Instant) -> Result<(), OverQuota> {
        let wants = [
            (Exceeded::Requests, self.requests.as_mut(), 1.0),
            (Exceeded::Tokens, self.tokens.as_mut(), f64::from(tokens)),
        ];
        let mut charged = Vec::with_capacity(2);
        for (exceeded, bucket, n) in wants {
            let Some(bucket) = bucket else { continue };
            bucket.refill(now);
            let wait = bucket.wait_for(n);
            if !wait.is_zero() {
                let retry_after = Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64);
                return Err(OverQuota {
                    exceeded,
                    retry_after,
                });
            }
            charged.push((bucket, n));
        }
        for (bucket, n) in charged {
            bucket.level -= n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(requests: Option<u32>, tokens: Option<u32>) -> Limits {
        Limits { requests, tokens }
    }

    #[test]
    fn requests_per_minute_allow_a_burst_then_refill_evenly() {
        let t0 = Instant::now();
        let mut q = Quota::new(limits(Some(3), None), t0);
        for _ in 0..3 {
            q.admit(0, t0).unwrap();
        }
        let refused = q.admit(0, t0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Requests);
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(20),
            "one request per 20 s"
        );
        assert!(q.admit(0, t0 + Duration::from_secs(19)).is_err());
        q.admit(0, t0 + Duration::from_secs(20)).unwrap();
        // A quiet hour refills one minute's allowance, not sixty.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            q.admit(0, later).unwrap();
        }
        assert!(q.admit(0, later).is_err());
    }

    #[test]
    fn a_refusal_by_tokens_charges_no_request() {
        let t0 = Instant::now();
        let mut q = Quota::new(limits(Some(2), Some(100)), t0);
        q.admit(80, t0).unwrap();
        let refused = q.admit(30, t0).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::Tokens);
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(6),
            "10 tokens at 100/min"
        );
        // The refused request took no request slot: one more fits.
        q.admit(20, t0).unwrap();
        assert_eq!(q.admit(0, t0).unwrap_err().exceeded, Exceeded::Requests);
    }

    #[test]
    fn a_request_larger_than_a_minute_is_told_to_wait_a_minute() {
        let t0 = Instant::now();
        let mut q = Quota::new(limits(None, Some(100)), t0);
        let refused = q.admit(101, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        let mut open = Quota::new(Limits::default(), t0);
        for _ in 0..10_000 {
            open.admit(u32::MAX, t0).unwrap();
        }
    }
}
