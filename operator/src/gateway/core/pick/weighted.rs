//! In proportion to each agent's reported capacity (its batch size): a weighted random
//! draw, so that an agent with twice the slots gets twice the requests.

use super::{Candidate, Pick, RequestKey, Rng};

/// Weighted by capacity.
#[derive(Debug, Default)]
pub struct Weighted {
    rng: Rng,
}

impl Weighted {
    #[cfg(test)]
    fn seeded(seed: u64) -> Self {
        Self {
            rng: Rng::seeded(seed),
        }
    }
}

impl Pick for Weighted {
    fn pick(&self, c: &[Candidate<'_>], _: &RequestKey<'_>) -> Option<usize> {
        // A degraded agent's slots count for less (half when all its devices are).
        let weight = |x: &Candidate<'_>| {
            let slots = f64::from(x.reported.max_batch_size.max(1)) * 16.0;
            (slots / x.reported.devices.cost()) as u64
        };
        let total: u64 = c.iter().map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut draw = self.rng.next() % total;
        c.iter().position(|x| {
            let w = weight(x);
            let hit = draw < w;
            draw = draw.saturating_sub(w);
            hit
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{DeviceCounts, Reported};
    use super::*;

    #[test]
    fn shares_follow_capacity() {
        let ids = ids(2);
        let c = candidates(&ids, &[(0, idle(8)), (0, idle(24))]);
        let w = Weighted::seeded(7);
        let mut seen = [0u32; 2];
        for _ in 0..4000 {
            seen[w.pick(&c, &RequestKey::default()).unwrap()] += 1;
        }
        let share = f64::from(seen[1]) / 4000.0;
        assert!((0.70..0.80).contains(&share), "{seen:?}");
    }

    #[test]
    fn a_degraded_agent_weighs_less() {
        let ids = ids(2);
        let degraded = Reported {
            devices: DeviceCounts {
                degraded: 1,
                ..DeviceCounts::default()
            },
            ..idle(8)
        };
        let c = candidates(&ids, &[(0, idle(8)), (0, degraded)]);
        let w = Weighted::seeded(7);
        let mut seen = [0u32; 2];
        for _ in 0..4000 {
            seen[w.pick(&c, &RequestKey::default()).unwrap()] += 1;
        }
        // Half the weight: a third of the requests.
        let share = f64::from(seen[1]) / 4000.0;
        assert!((0.28..0.38).contains(&share), "{seen:?}");
    }
}
