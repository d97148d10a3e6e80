//! Power of two choices: of two agents drawn at random, the less loaded. In a large pool
//! that is nearly as good as the least loaded of all, and it does not herd: every operator
//! replica serves a gateway, and gateways reading the same load reports would all send
//! their requests to the one least-loaded agent until it next reports (each sees only its
//! own in-flight requests at once); two random draws spread them. A small pool is scanned
//! whole: there the least loaded is cheap to find and worth having.

use super::Rng;

/// Pools of up to this many agents are scanned whole (`RoutingStrategy`'s docs say 8).
pub const SCAN_UP_TO: usize = 8;

/// The index of the smallest `score`, ties broken by `rng`.
pub(crate) fn min_by(rng: &Rng, n: usize, score: impl Fn(usize) -> f64) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = rng.below(n);
    (0..n)
        .map(|k| (start + k) % n)
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
}

/// The index of a low `score` among `n`: the lowest in a small pool, the lower of two
/// random ones in a large pool.
pub(crate) fn least_of(rng: &Rng, n: usize, score: impl Fn(usize) -> f64) -> Option<usize> {
    if n <= SCAN_UP_TO {
        return min_by(rng, n, score);
    }
    let a = rng.below(n);
    // A second, different agent.
    let b = (a + 1 + rng.below(n - 1)) % n;
    Some(if score(b) < score(a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: usize, picks: usize, score: impl Fn(usize) -> f64) -> Vec<usize> {
        let rng = Rng::default();
        let mut seen = vec![0; n];
        for _ in 0..picks {
            seen[least_of(&rng, n, &score).unwrap()] += 1;
        }
        seen
    }

    #[test]
    fn a_small_pool_gets_its_least_loaded_agent() {
        let seen = counts(SCAN_UP_TO, 100, |i| if i == 5 { 0.1 } else { 1.0 });
        assert_eq!(seen[5], 100, "{seen:?}");
        assert_eq!(least_of(&Rng::default(), 0, |_| 0.0), None);
    }

    #[test]
    fn a_large_pool_spreads_by_two_choices_and_never_picks_the_busiest() {
        // Agent i has load i: two choices pick agent i with odds 2(n-1-i) / n(n-1).
        let n = 16;
        let picks = 4800;
        let seen = counts(n, picks, |i| i as f64);
        assert_eq!(seen[n - 1], 0, "the busiest loses every draw: {seen:?}");
        // The least loaded gets about 1/8 of the requests, not all of them (no herd).
        let expected = picks * 2 * (n - 1) / (n * (n - 1));
        assert!(
            seen[0] > expected * 2 / 3 && seen[0] < expected * 3 / 2,
            "{seen:?}"
        );
        let (light, heavy) = seen.split_at(n / 2);
        assert!(
            light.iter().sum::<usize>() > 2 * heavy.iter().sum::<usize>(),
            "{seen:?}"
        );
        assert!(seen[..n - 1].iter().all(|&k| k > 0), "{seen:?}");
    }
}
