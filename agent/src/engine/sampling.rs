//! Choosing the next token from logits: greedy at temperature 0, otherwise temperature,
//! top-k and top-p (nucleus) sampling with a seedable generator, after OpenAI-style
//! presence and frequency penalties.

use std::collections::HashMap;

/// Sampling settings of one request (already validated at the edge).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches this (1 keeps all).
    pub top_p: f32,
    /// Keep only the k most likely tokens (`None` keeps all).
    pub top_k: Option<usize>,
    /// Makes sampling reproducible.
    pub seed: Option<u64>,
    /// Subtracted once from the logit of every token already generated.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// Draws tokens for one sequence; keeps its generator and the counts of what it generated.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler; without a seed, the generator starts from fresh process entropy.
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(entropy);
        Self {
            params,
            rng: SplitMix64(seed),
            counts: HashMap::new(),
        }
    }

    /// Picks the next token from `logits` (one per vocabulary entry) and records it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let mut logits = logits.to_vec();
        self.penalise(&mut logits);
        let token = if self.params.temperature <= 0.0 {
            argmax(&logits)
        } else {
            self.draw(&logits)
        };
        *self.counts.entry(token).or_insert(0) += 1;
        token
    }

    fn penalise(&self, logits: &mut [f32]) {
        let (presence, frequency) = (self.params.presence_penalty, self.params.frequency_penalty);
        if presence == 0.0 && frequency == 0.0 {
            return;
        }
        for (&token, &count) in &self.counts {
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= presence + frequency * count as f32;
            }
        }
    }

    fn draw(&mut self, logits: &[f32]) -> u32 {
        let candidates = nucleus(logits, &self.params);
        let total: f32 = candidates.iter().map(|(_, p)| p).sum();
        let mut u = self.rng.next_f32() * total;
        for &(token, p) in &candidates {
            if u < p {
                return token;
            }
            u -= p;
        }
        candidates.last().map_or(0, |(t, _)| *t)
    }
}

/// Tokens with their (unnormalised) probabilities after temperature, top-k and top-p, most
/// likely first.
fn nucleus(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) / params.temperature).exp()))
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    if let Some(k) = params.top_k {
        probs.truncate(k.max(1));
    }
    let sum: f32 = probs.iter().map(|(_, p)| p).sum();
    let mut kept = 0;
    let mut cumulative = 0.0;
    for (_, p) in &probs {
        kept += 1;
        cumulative += p / sum;
        if cumulative >= params.top_p {
            break;
        }
    }
    probs.truncate(kept.max(1));
    probs
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// A small, fast, seedable generator (SplitMix64): reproducible across platforms.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Finds stop strings in streamed text. Text that might be the start of a stop string is
/// held back until it is known not to be, so that no part of a stop string is emitted.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What to emit after feeding new text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCheck {
    /// Text safe to send to the client now.
    pub emit: String,
    /// A stop string was reached: generation ends, the stop string is not emitted.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub fn feed(&mut self, text: &str) -> StopCheck {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let emit = self.pending[..at].to_owned();
            self.pending.clear();
            return StopCheck {
                emit,
                stopped: true,
            };
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.pending.len() - keep;
        let emit = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        StopCheck {
            emit,
            stopped: false,
        }
    }

    /// Whatever is held back, once generation ended for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that begins some stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let p = &self.pending;
        (1..=p.len())
            .rev()
            .filter(|&n| p.is_char_boundary(p.len() - n))
            .find(|&n| self.stops.iter().any(|s| s.starts_with(&p[p.len() - n..])))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&[0.1, 3.0, 2.9]), 1);
    }

    #[test]
    fn a_seed_makes_sampling_reproducible() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..params(1.0)
            });
            (0..20).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [5.0, 4.0, 1.0, 0.0];
        let top1 = nucleus(
            &logits,
            &SamplingParams {
                top_k: Some(1),
                ..params(1.0)
            },
        );
        assert_eq!(top1.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [0]);
        // p(0) ~ 0.71, p(1) ~ 0.26: top_p 0.9 keeps both, and nothing else.
        let nucleus_09 = nucleus(
            &logits,
            &SamplingParams {
                top_p: 0.9,
                ..params(1.0)
            },
        );
        assert_eq!(
            nucleus_09.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            [0, 1]
        );
        for seed in 0..50 {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                top_p: 0.9,
                ..params(1.0)
            });
            assert!(s.sample(&logits) <= 1);
        }
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 2.0,
            ..params(0.0)
        });
        let logits = [1.0, 0.5];
        assert_eq!(s.sample(&logits), 0);
        assert_eq!(
            s.sample(&logits),
            1,
            "token 0 is penalised after being generated"
        );
        let mut p = Sampler::new(SamplingParams {
            presence_penalty: 0.4,
            ..params(0.0)
        });
        assert_eq!(p.sample(&logits), 0);
        assert_eq!(p.sample(&logits), 0, "0.6 still beats 0.5");
    }

    #[test]
    fn stop_strings_end_the_text_and_are_never_emitted() {
        let mut m = StopMatcher::new(&["\nUser:".to_owned()]);
        assert_eq!(
            m.feed("Hello"),
            StopCheck {
                emit: "Hello".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.feed(" there\nUs"),
            StopCheck {
                emit: " there".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.feed("er: more"),
            StopCheck {
                emit: String::new(),
                stopped: true
            }
        );
        let mut m = StopMatcher::new(&["END".to_owned()]);
        assert_eq!(m.feed("sEN").emit, "s");
        assert_eq!(m.feed("x").emit, "ENx", "a broken prefix is released");
        assert_eq!(m.feed("é E").emit, "é ");
        assert_eq!(m.flush(), "E");
    }
}
