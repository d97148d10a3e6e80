//! Which replica takes a request: the least loaded one on a schedulable device, a degraded
//! device's load counting double so that it gets less traffic. Plain values.

use crate::gpu::health::HealthState;
use crate::scheduler::batcher::Load;

/// One replica as routing sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Its device's health.
    pub health: HealthState,
    /// Its engine's latest load.
    pub load: Load,
    /// Submissions routed to it that its load does not show yet.
    pub pending: usize,
}

/// How busy a replica is for routing: requests held (running, waiting, routed there and
/// not yet queued, plus the one being placed) per batch slot; a degraded device's count
/// doubles.
fn score(c: &Candidate) -> Option<f64> {
    let weight = match c.health {
        HealthState::Healthy => 1.0,
        HealthState::Degraded => 2.0,
        HealthState::Failed | HealthState::Recovering => return None,
    };
    let held = (c.load.running + c.load.waiting() + c.pending + 1) as f64;
    Some(weight * held / c.load.batch_limit.max(1) as f64)
}

/// The index of the replica to use, or `None` when no device is schedulable. Ties go to
/// the first, so that an idle pool keeps using the same replica's warm caches.
pub fn pick(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, c)| score(c).map(|s| (i, s)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(health: HealthState, running: usize, waiting: usize) -> Candidate {
        Candidate {
            health,
            load: Load {
                running,
                queued: [0, 0, waiting, 0],
                batch_limit: 4,
                ..Load::default()
            },
            pending: 0,
        }
    }

    #[test]
    fn the_least_loaded_schedulable_replica_is_picked() {
        use HealthState::*;
        let c = [candidate(Healthy, 4, 2), candidate(Healthy, 1, 0)];
        assert_eq!(pick(&c), Some(1));
        // Failed and recovering devices get nothing, however idle.
        let c = [
            candidate(Healthy, 4, 2),
            candidate(Failed, 0, 0),
            candidate(Recovering, 0, 0),
        ];
        assert_eq!(pick(&c), Some(0));
        assert_eq!(pick(&[candidate(Failed, 0, 0)]), None);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn a_degraded_device_gets_less_traffic() {
        use HealthState::*;
        // Degraded with 1 held: (1+1)*2 = 4 vs healthy with 2 held: 3.
        let c = [candidate(Degraded, 1, 0), candidate(Healthy, 2, 0)];
        assert_eq!(pick(&c), Some(1));
        // But an idle degraded device beats a healthy one four requests deep.
        let c = [candidate(Degraded, 0, 0), candidate(Healthy, 4, 0)];
        assert_eq!(pick(&c), Some(0));
    }

    #[test]
    fn submissions_not_yet_in_the_load_count() {
        let mut busy = candidate(HealthState::Healthy, 0, 0);
        busy.pending = 3;
        let c = [busy, candidate(HealthState::Healthy, 2, 0)];
        assert_eq!(pick(&c), Some(1));
    }

    #[test]
    fn ties_go_to_the_first() {
        let c = [candidate(HealthState::Healthy, 0, 0); 3];
        assert_eq!(pick(&c), Some(0));
    }
}
