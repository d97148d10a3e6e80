//! The semantic index: the embeddings of cached turns, grouped by scope (everything but
//! the last turn must match exactly, so only turns of the same scope are ever compared),
//! searched by an exact scan. At 100,000 entries in one scope (the worst case: one system
//! prompt for every request) the scan reads the whole scope per query, so it reads 8-bit
//! codes of the unit vectors (a quarter of the bytes of f32; memory bandwidth is what a
//! scan costs) and re-ranks the best few with the f32 vectors. `bench/cache` measures it
//! well under the semantic hit budget at that size, so no approximate index is kept: one
//! would cost memory per entry and a chance of missing the best match, for no gain here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A candidate: the entry's exact key and its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The cached entry's exact key.
    pub key: Arc<str>,
    /// Cosine similarity (the vectors are unit length).
    pub score: f32,
}

/// One scope's vectors, stored flat for the scan.
#[derive(Debug, Default)]
struct Scope {
    vectors: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    slots: Vec<(Arc<str>, u64)>,
    by_key: HashMap<Arc<str>, usize>,
}

/// Candidates re-ranked exactly per one asked for.
const RERANK: usize = 4;
/// How far below the floor an 8-bit score may be and still be re-ranked: the codes' error
/// on a dot product of 384 unit-vector components is a few thousandths.
const CODE_SLACK: f32 = 0.02;

impl Scope {
    fn insert(&mut self, key: Arc<str>, id: u64, vector: &[f32]) {
        let dim = vector.len();
        let (codes, scale) = quantize(vector);
        if let Some(&slot) = self.by_key.get(&key) {
            self.vectors[slot * dim..(slot + 1) * dim].copy_from_slice(vector);
            self.codes[slot * dim..(slot + 1) * dim].copy_from_slice(&codes);
            self.scales[slot] = scale;
            self.slots[slot].1 = id;
            return;
        }
        self.by_key.insert(key.clone(), self.slots.len());
        self.slots.push((key, id));
        self.vectors.extend_from_slice(vector);
        self.codes.extend_from_slice(&codes);
        self.scales.push(scale);
    }

    /// Forgets `key` if it still belongs to entry `id`; the last slot moves into its place.
    fn remove(&mut self, key: &str, id: u64, dim: usize) {
        let Some(&slot) = self.by_key.get(key) else {
            return;
        };
        if self.slots[slot].1 != id {
            return;
        }
        self.by_key.remove(key);
        let last = self.slots.len() - 1;
        self.slots.swap_remove(slot);
        self.scales.swap_remove(slot);
        if slot != last {
            move_row(&mut self.vectors, last, slot, dim);
            move_row(&mut self.codes, last, slot, dim);
            self.by_key.insert(self.slots[slot].0.clone(), slot);
        }
        self.vectors.truncate(last * dim);
        self.codes.truncate(last * dim);
    }

    /// The `k` best slots scoring at least `floor`, best first: the 8-bit scan picks
    /// candidates, the f32 vectors rank them.
    fn nearest(&self, query: &[f32], k: usize, floor: f32) -> Vec<Candidate> {
        let dim = query.len();
        let (codes, scale) = quantize(query);
        let rough = self.codes.chunks_exact(dim).zip(&self.scales).enumerate();
        let rough = rough.map(|(slot, (c, s))| (slot, dot_i8(&codes, c) as f32 * scale * s));
        let picked = best(rough, k * RERANK, floor - CODE_SLACK);
        let exact = picked.into_iter().map(|(slot, _)| {
            (
                slot,
                dot(query, &self.vectors[slot * dim..(slot + 1) * dim]),
            )
        });
        best(exact, k, floor)
            .into_iter()
            .map(|(slot, score)| Candidate {
                key: self.slots[slot].0.clone(),
                score,
            })
            .collect()
    }
}

/// The `k` highest scores of at least `floor`, highest first.
fn best(scores: impl Iterator<Item = (usize, f32)>, k: usize, floor: f32) -> Vec<(usize, f32)> {
    let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (slot, score) in scores {
        // Written so that a NaN score (a broken embedding) never passes.
        if score.is_nan() || score < floor || top.len() == k && top[k - 1].1 >= score {
            continue;
        }
        let at = top.partition_point(|(_, s)| *s >= score);
        top.insert(at, (slot, score));
        top.truncate(k);
    }
    top
}

/// Copies row `from` over row `to` of a flat matrix of `dim` columns.
fn move_row<T: Copy>(flat: &mut [T], from: usize, to: usize, dim: usize) {
    flat.copy_within(from * dim..(from + 1) * dim, to * dim);
}

/// 8-bit codes of `v` and their scale (`v[i]` is about `codes[i] * scale`).
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let codes = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale)
}

/// Every scope's vectors.
#[derive(Debug)]
pub struct SemanticIndex {
    dim: usize,
    scopes: RwLock<HashMap<String, Scope>>,
}

impl SemanticIndex {
    /// An empty index of `dim`-dimensional unit vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            scopes: RwLock::new(HashMap::new()),
        }
    }

    /// Files entry `id` (key `key`) under `scope`. Vectors of another dimension are
    /// ignored (a snapshot from another embedding model).
    pub fn insert(&self, scope: &str, key: Arc<str>, id: u64, vector: &[f32]) {
        if vector.len() != self.dim {
            return;
        }
        if let Ok(mut scopes) = self.scopes.write() {
            let entry = scopes.entry(scope.to_owned()).or_default();
            entry.insert(key, id, vector);
        }
    }

    /// Forgets entry `id` under `key`, if it is still the one filed there.
    pub fn remove(&self, scope: &str, key: &str, id: u64) {
        let Ok(mut scopes) = self.scopes.write() else {
            return;
        };
        if let Some(s) = scopes.get_mut(scope) {
            s.remove(key, id, self.dim);
            if s.slots.is_empty() {
                scopes.remove(scope);
            }
        }
    }

    /// The `k` nearest turns of `scope` to `query` scoring at least `floor`, best first.
    pub fn nearest(&self, scope: &str, query: &[f32], k: usize, floor: f32) -> Vec<Candidate> {
        if query.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let Ok(scopes) = self.scopes.read() else {
            return Vec::new();
        };
        scopes
            .get(scope)
            .map(|s| s.nearest(query, k, floor))
            .unwrap_or_default()
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.scopes
            .read()
            .map_or(0, |s| s.values().map(|s| s.slots.len()).sum())
    }

    /// Whether it holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dot product, in sixteen independent sums that the compiler keeps in vector
/// registers.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a16.zip(b16) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// The dot product of 8-bit codes, widened to 32 bits in sixteen independent sums.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut sums = [0i32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = a16
        .remainder()
        .iter()
        .zip(b16.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in a16.zip(b16) {
        for ((sum, x), y) in sums.iter_mut().zip(x).zip(y) {
            *sum += i32::from(*x) * i32::from(*y);
        }
    }
    sums.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    #[test]
    fn dot_matches_the_plain_sum_at_every_length() {
        for len in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{len}");
        }
    }

    #[test]
    fn codes_approximate_the_dot_product() {
        let a = unit(
            &(0..384)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>(),
        );
        let b = unit(
            &(0..384)
                .map(|i| (i as f32 * 0.29).sin() + 0.3)
                .collect::<Vec<_>>(),
        );
        let ((ca, sa), (cb, sb)) = (quantize(&a), quantize(&b));
        let rough = dot_i8(&ca, &cb) as f32 * sa * sb;
        assert!(
            (rough - dot(&a, &b)).abs() < CODE_SLACK / 4.0,
            "{rough} vs {}",
            dot(&a, &b)
        );
    }

    #[test]
    fn nearest_ranks_within_the_scope_and_respects_the_floor() {
        let index = SemanticIndex::new(2);
        index.insert("s", "a".into(), 1, &unit(&[1.0, 0.0]));
        index.insert("s", "b".into(), 2, &unit(&[1.0, 0.2]));
        index.insert("s", "c".into(), 3, &unit(&[0.0, 1.0]));
        index.insert("other", "d".into(), 4, &unit(&[1.0, 0.01]));
        let found = index.nearest("s", &unit(&[1.0, 0.05]), 2, 0.5);
        let keys: Vec<&str> = found.iter().map(|c| &*c.key).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(index.nearest("s", &unit(&[-1.0, 0.0]), 3, 0.5).is_empty());
        assert!(index.nearest("none", &unit(&[1.0, 0.0]), 3, 0.0).is_empty());
    }

    #[test]
    fn removal_forgets_only_the_entry_it_names_and_keeps_the_rest_searchable() {
        let index = SemanticIndex::new(2);
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            index.insert("s", key.into(), i as u64, &unit(&[1.0, i as f32]));
        }
        index.remove("s", "a", 99); // another entry's id: kept
        assert_eq!(index.len(), 3);
        index.remove("s", "a", 0);
        assert_eq!(index.len(), 2);
        let found = index.nearest("s", &unit(&[1.0, 2.0]), 1, 0.0);
        assert_eq!(&*found[0].key, "c");
        assert!((found[0].score - 1.0).abs() < 1e-5);
        index.remove("s", "b", 1);
        index.remove("s", "c", 2);
        assert!(index.is_empty());
    }
}
