//! Automatic prefix caching: full KV blocks of prompts, keyed by the hash chain of their
//! tokens (the parent block's hash and the block's own tokens, from a root per model), so
//! that a request starting with tokens another request already prefilled (a shared system
//! prompt, an earlier turn of the conversation) copies their keys and values in instead of
//! computing them again. Blocks are copied into the sequence's own buffers rather than
//! shared: a sequence's cache is one contiguous buffer per layer (what attention reads in
//! one pass), and a copy of a block costs microseconds where its prefill costs
//! milliseconds. Every cached block is unreferenced by construction, so the whole cache is
//! evictable; the least recently used leaf goes first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use super::kv::BLOCK_SIZE;
pub use super::kv::BlockLayers;

struct CachedBlock {
    /// The block's tokens, compared on every hit: a hash collision never serves another
    /// prompt's keys.
    tokens: [u32; BLOCK_SIZE],
    /// The parent block's hash; what a hit compares besides the tokens.
    parent: u64,
    layers: BlockLayers,
    /// Last use, in the cache's own clock; the key of `lru`.
    used: u64,
}

/// The cached blocks of one model.
pub struct PrefixCache {
    root: u64,
    blocks: HashMap<u64, CachedBlock>,
    /// Last use -> block hash, oldest first.
    lru: BTreeMap<u64, u64>,
    clock: u64,
}

impl std::fmt::Debug for PrefixCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixCache")
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// The hashes of the full blocks of `tokens`, each chained to its parent's from `root`.
pub fn chain(root: u64, tokens: &[u32]) -> Vec<u64> {
    let mut parent = root;
    tokens
        .chunks_exact(BLOCK_SIZE)
        .map(|block| {
            parent = block_hash(parent, block);
            parent
        })
        .collect()
}

fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl PrefixCache {
    /// An empty cache whose chains start at `root` (one value per model).
    pub fn new(root: u64) -> Self {
        Self {
            root,
            blocks: HashMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The hash chain of `tokens`' full blocks.
    pub fn chain(&self, tokens: &[u32]) -> Vec<u64> {
        chain(self.root, tokens)
    }

    /// The cached blocks `tokens` starts with, at most `most` of them, in order; marks them
    /// used (the first as the most recent, so leaves are evicted before their parents).
    pub fn lookup(&mut self, tokens: &[u32], most: usize) -> Vec<BlockLayers> {
        let hashes = self.chain(&tokens[..tokens.len().min(most * BLOCK_SIZE)]);
        let mut parent = self.root;
        let mut found = Vec::new();
        for (hash, block) in hashes.iter().zip(tokens.chunks_exact(BLOCK_SIZE)) {
            match self.blocks.get(hash) {
                Some(b) if b.parent == parent && b.tokens == block => found.push(*hash),
                _ => break,
            }
            parent = *hash;
        }
        self.touch(&found);
        found
            .iter()
            .filter_map(|h| self.blocks.get(h).map(|b| b.layers.clone()))
            .collect()
    }

    /// Whether the block of `hash` is cached.
    pub fn contains(&self, hash: u64) -> bool {
        self.blocks.contains_key(&hash)
    }

    /// Caches block `index` of `tokens` (whose hash chain is `hashes`) with `layers`.
    pub fn insert(&mut self, hashes: &[u64], index: usize, tokens: &[u32], layers: BlockLayers) {
        let start = index * BLOCK_SIZE;
        let Ok(block) = <[u32; BLOCK_SIZE]>::try_from(&tokens[start..start + BLOCK_SIZE]) else {
            return;
        };
        let parent = index.checked_sub(1).map_or(self.root, |i| hashes[i]);
        self.clock += 1;
        let used = self.clock;
        let cached = CachedBlock {
            tokens: block,
            parent,
            layers,
            used,
        };
        if let Some(old) = self.blocks.insert(hashes[index], cached) {
            self.lru.remove(&old.used);
        }
        self.lru.insert(used, hashes[index]);
    }

    /// Drops the least recently used block that is not one of `keep`; false when none is
    /// left to drop.
    pub fn evict(&mut self, keep: &[u64]) -> bool {
        let victim = self
            .lru
            .iter()
            .find(|(_, hash)| !keep.contains(hash))
            .map(|(&used, &hash)| (used, hash));
        let Some((used, hash)) = victim else {
            return false;
        };
        self.lru.remove(&used);
        self.blocks.remove(&hash);
        true
    }

    /// Marks the cached blocks of `hashes` (a chain, root first) used, the root as the most
    /// recent: a parent is then always newer than its children, so eviction takes leaves
    /// first and never orphans a chain by taking its root.
    pub fn touch(&mut self, hashes: &[u64]) {
        for hash in hashes.iter().rev() {
            self.clock += 1;
            if let Some(b) = self.blocks.get_mut(hash) {
                self.lru.remove(&b.used);
                b.used = self.clock;
                self.lru.insert(self.clock, *hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn layers(tag: f32) -> BlockLayers {
        let t = Tensor::full(tag, (1, BLOCK_SIZE, 2), &Device::Cpu).expect("tensor");
        vec![(t.clone(), t)]
    }

    fn tag(b: &BlockLayers) -> f32 {
        let v = b[0].0.flatten_all().and_then(|t| t.to_vec1::<f32>());
        v.expect("values")[0]
    }

    fn cache_with(tokens: &[u32], blocks: usize) -> PrefixCache {
        let mut cache = PrefixCache::new(7);
        let hashes = cache.chain(tokens);
        for i in 0..blocks {
            cache.insert(&hashes, i, tokens, layers(i as f32));
        }
        cache
    }

    #[test]
    fn a_prompt_finds_the_longest_cached_chain_it_starts_with() {
        let prompt: Vec<u32> = (0..3 * BLOCK_SIZE as u32 + 5).collect();
        let mut cache = cache_with(&prompt, 2);
        let found = cache.lookup(&prompt, 3);
        assert_eq!(found.iter().map(tag).collect::<Vec<_>>(), [0.0, 1.0]);
        assert_eq!(cache.lookup(&prompt, 1).len(), 1, "at most `most` blocks");
        let mut other = prompt.clone();
        other[0] = 999;
        assert!(
            cache.lookup(&other, 3).is_empty(),
            "the chain starts at the first block"
        );
        let mut later = prompt.clone();
        later[BLOCK_SIZE + 3] = 999;
        assert_eq!(
            cache.lookup(&later, 3).len(),
            1,
            "a changed block ends the match"
        );
    }

    #[test]
    fn a_block_is_found_only_after_the_same_parent() {
        let prompt: Vec<u32> = (0..2 * BLOCK_SIZE as u32).collect();
        let mut cache = cache_with(&prompt, 2);
        // The second block's tokens at the start of another prompt are another block.
        let second_first: Vec<u32> = prompt[BLOCK_SIZE..].to_vec();
        assert!(cache.lookup(&second_first, 1).is_empty());
        // Another model's chain (another root) finds nothing.
        let mut elsewhere = PrefixCache::new(8);
        assert!(elsewhere.lookup(&prompt, 2).is_empty());
    }

    #[test]
    fn a_chain_just_inserted_loses_its_leaf_first() {
        let a: Vec<u32> = (0..3 * BLOCK_SIZE as u32).collect();
        let mut cache = cache_with(&a, 3);
        let hashes = cache.chain(&a);
        cache.touch(&hashes);
        assert!(cache.evict(&[]));
        assert!(!cache.contains(hashes[2]), "the leaf goes first");
        assert_eq!(
            cache.lookup(&a, 3).len(),
            2,
            "the rest of the chain still hits"
        );
    }

    #[test]
    fn eviction_takes_the_least_recently_used_leaf_first() {
        let a: Vec<u32> = (0..2 * BLOCK_SIZE as u32).collect();
        let b: Vec<u32> = (1000..1000 + BLOCK_SIZE as u32).collect();
        let mut cache = cache_with(&a, 2);
        let hb = cache.chain(&b);
        cache.insert(&hb, 0, &b, layers(9.0));
        assert_eq!(cache.lookup(&a, 2).len(), 2); // a used after b
        assert!(cache.evict(&[]));
        assert!(
            !cache.contains(hb[0]),
            "b, the least recently used, went first"
        );
        let ha = cache.chain(&a);
        assert!(cache.evict(&[]));
        assert!(
            cache.contains(ha[0]) && !cache.contains(ha[1]),
            "then a's leaf"
        );
        assert!(!cache.evict(&[ha[0]]), "a kept block is never evicted");
        assert!(cache.evict(&[]));
        assert!(cache.is_empty());
    }
}
