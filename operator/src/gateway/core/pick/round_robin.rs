//! Each agent in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Pick, RequestKey};

/// Round robin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Pick for RoundRobin {
    fn pick(&self, candidates: &[Candidate<'_>], _: &RequestKey<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::Relaxed) % candidates.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn takes_turns() {
        let ids = ids(3);
        let c = candidates(&ids, &[(0, idle(4)); 3]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..6)
            .filter_map(|_| rr.pick(&c, &RequestKey::default()))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.pick(&[], &RequestKey::default()), None);
    }
}
