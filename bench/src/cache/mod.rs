//! `bench/cache`: the response cache measured three ways. `pairs`: precision and recall of
//! semantic matching by threshold on the labelled pairs of `bench/data`, with the real
//! embedding model, with and without the lexical check. `filled`: a cache of 100,000
//! entries in one scope, in process (memory per entry, search time, snapshot write and
//! load). `served`: that snapshot loaded by a real agent, whose exact and semantic hits
//! are timed at its HTTP API and through the gateway.

pub mod filled;
pub mod pairs;
pub mod served;

use std::time::Duration;

/// `p50 / p99` in milliseconds.
pub fn percentiles(samples: &[Duration]) -> String {
    let ms = |q| crate::quantile(samples, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    format!("{:.3} / {:.3}", ms(0.5), ms(0.99))
}
