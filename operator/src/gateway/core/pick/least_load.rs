//! Least connections (this gateway's in-flight requests) and least load (the agents'
//! reports combined with this gateway's in-flight requests, so the choice reacts between
//! reports). Ties are broken at random so that equal agents share the traffic; a large
//! pool is picked from by two choices (see `two_choices`).

use super::two_choices::least_of;
use super::{Candidate, Pick, RequestKey, Rng};

/// The agent with the fewest requests in flight from this gateway.
#[derive(Debug, Default)]
pub struct LeastConnections {
    rng: Rng,
}

/// The agent with the least load.
#[derive(Debug, Default)]
pub struct LeastLoad {
    rng: Rng,
}

impl Pick for LeastConnections {
    fn pick(&self, c: &[Candidate<'_>], _: &RequestKey<'_>) -> Option<usize> {
        least_of(&self.rng, c.len(), |i| f64::from(c[i].in_flight))
    }
}

impl Pick for LeastLoad {
    fn pick(&self, c: &[Candidate<'_>], _: &RequestKey<'_>) -> Option<usize> {
        least_of(&self.rng, c.len(), |i| c[i].load())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Reported;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn least_connections_follows_in_flight_and_spreads_ties() {
        let ids = ids(3);
        let c = candidates(&ids, &[(3, idle(4)), (1, idle(4)), (2, idle(4))]);
        assert_eq!(
            LeastConnections::default().pick(&c, &RequestKey::default()),
            Some(1)
        );
        let even = candidates(&ids, &[(0, idle(4)); 3]);
        let p = LeastConnections::default();
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[p.pick(&even, &RequestKey::default()).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn least_load_weighs_queue_batch_kv_and_local_in_flight() {
        let ids = ids(3);
        let busy = Reported {
            queued: 4,
            running: 8,
            max_batch_size: 8,
            kv_usage: 0.9,
            ..Reported::default()
        };
        let half = Reported {
            queued: 0,
            running: 4,
            max_batch_size: 8,
            kv_usage: 0.3,
            ..Reported::default()
        };
        let c = candidates(&ids, &[(0, busy), (0, half), (0, idle(8))]);
        assert_eq!(
            LeastLoad::default().pick(&c, &RequestKey::default()),
            Some(2)
        );
        // Requests this gateway just sent count before the next report arrives.
        let c = candidates(&ids, &[(0, busy), (0, half), (8, idle(8))]);
        assert_eq!(
            LeastLoad::default().pick(&c, &RequestKey::default()),
            Some(1)
        );
    }
}
