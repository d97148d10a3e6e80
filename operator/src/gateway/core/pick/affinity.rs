//! Affinity with bounded load: rendezvous (highest-random-weight) hashing of a key over the
//! candidates — consistent, so adding or removing an agent moves only its share of keys —
//! taking the first agent in the key's order whose occupancy is under
//! `ceil(BOUND * (total + 1) / n)`; when every agent is over it, the least loaded.
//! Prefix affinity keys on the start of the prompt, so requests sharing a system prompt
//! land where it is cached; session affinity keys on the session.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::two_choices::least_of;
use super::{Candidate, Pick, RequestKey, Rng};

/// How far above the mean an agent may be loaded and still keep its keys.
const BOUND: f64 = 1.25;

/// Requests sharing a prompt prefix go to the same agent.
#[derive(Debug, Default)]
pub struct PrefixAffinity {
    rng: Rng,
}

/// Requests of one session go to the same agent.
#[derive(Debug, Default)]
pub struct SessionAffinity {
    rng: Rng,
}

impl Pick for PrefixAffinity {
    fn pick(&self, c: &[Candidate<'_>], key: &RequestKey<'_>) -> Option<usize> {
        bounded(&self.rng, c, (!key.prefix.is_empty()).then_some(key.prefix))
    }
}

impl Pick for SessionAffinity {
    fn pick(&self, c: &[Candidate<'_>], key: &RequestKey<'_>) -> Option<usize> {
        bounded(&self.rng, c, key.session)
    }
}

fn weight(key: &str, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

fn bounded(rng: &Rng, c: &[Candidate<'_>], key: Option<&str>) -> Option<usize> {
    let least = || least_of(rng, c.len(), |i| c[i].load());
    let Some(key) = key else { return least() };
    let total: u32 = c.iter().map(Candidate::occupancy).sum();
    let bound = (BOUND * f64::from(total + 1) / c.len().max(1) as f64).ceil() as u32;
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(key, c[i].id)));
    order
        .into_iter()
        .find(|&i| c[i].occupancy() < bound)
        .or_else(least)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn key(prefix: &str) -> RequestKey<'_> {
        RequestKey {
            prefix,
            session: None,
        }
    }

    #[test]
    fn a_prefix_sticks_to_one_agent_and_prefixes_spread() {
        let ids = ids(4);
        let c = candidates(&ids, &[(0, idle(8)); 4]);
        let p = PrefixAffinity::default();
        let mut homes = std::collections::HashSet::new();
        for n in 0..8 {
            let prefix = format!("system prompt {n}");
            let first = p.pick(&c, &key(&prefix));
            assert!((0..5).all(|_| p.pick(&c, &key(&prefix)) == first));
            homes.insert(first);
        }
        assert!(homes.len() >= 3, "8 prefixes landed on {homes:?}");
    }

    #[test]
    fn removing_an_agent_moves_only_its_keys() {
        let ids = ids(4);
        let all = candidates(&ids, &[(0, idle(8)); 4]);
        let p = PrefixAffinity::default();
        let keys: Vec<String> = (0..200).map(|n| format!("k{n}")).collect();
        let before: Vec<_> = keys
            .iter()
            .map(|k| all[p.pick(&all, &key(k)).unwrap()].id)
            .collect();
        let three: Vec<_> = all.iter().copied().filter(|c| c.id != "a3").collect();
        for (k, was) in keys.iter().zip(before) {
            let now = three[p.pick(&three, &key(k)).unwrap()].id;
            if was != "a3" {
                assert_eq!(now, was, "{k} moved although its agent stayed");
            }
        }
    }

    #[test]
    fn an_overloaded_home_spills_to_another_agent() {
        let ids = ids(2);
        let p = SessionAffinity::default();
        let session = RequestKey {
            prefix: "",
            session: Some("user-1"),
        };
        let c = candidates(&ids, &[(0, idle(8)); 2]);
        let home = p.pick(&c, &session).unwrap();
        let mut loads = [(0, idle(8)); 2];
        loads[home].0 = 10;
        let c = candidates(&ids, &loads);
        assert_eq!(
            p.pick(&c, &session),
            Some(1 - home),
            "bounded load spills over"
        );
        let none = RequestKey::default();
        assert_eq!(p.pick(&c, &none), Some(1 - home), "no session: least load");
    }
}
