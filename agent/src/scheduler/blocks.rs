//! The engine's KV blocks: the budget that running sequences draw from, and the prefix
//! cache that keeps prompts' full blocks in what they leave free. Cached blocks count
//! against the budget (the memory bound holds) but are always evictable: a sequence that
//! needs blocks evicts least recently used cached ones before anything is refused or
//! preempted, so caching never costs a running request its room.

use super::sequence::Sequence;
use crate::engine::kv::{BLOCK_SIZE, BlockBudget, BlockLayers};
use crate::engine::prefix::PrefixCache;

/// Running totals of prefix reuse, in tokens, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens of admitted requests looked up.
    pub queried_tokens: u64,
    /// Of those, tokens whose keys and values came from the cache.
    pub hit_tokens: u64,
    /// Blocks the cache holds now.
    pub cached_blocks: usize,
}

pub(super) struct KvBlocks {
    budget: BlockBudget,
    prefix: Option<PrefixCache>,
    queried: u64,
    hits: u64,
}

impl KvBlocks {
    /// `total` blocks; a prefix cache (chains from `root`) when `prefix_caching`.
    pub fn new(total: usize, prefix_caching: bool, root: u64) -> Self {
        Self {
            budget: BlockBudget::new(total),
            prefix: prefix_caching.then(|| PrefixCache::new(root)),
            queried: 0,
            hits: 0,
        }
    }

    /// Blocks in the budget.
    pub fn total(&self) -> usize {
        self.budget.total()
    }

    /// Blocks held by sequences (cached blocks are free to take).
    pub fn used_by_sequences(&self) -> usize {
        self.budget.used() - self.cached()
    }

    fn cached(&self) -> usize {
        self.prefix.as_ref().map_or(0, PrefixCache::len)
    }

    /// Takes `n` blocks for a sequence, evicting cached blocks as needed; false (nothing
    /// taken, nothing evicted) when sequences hold too many for `n` to fit.
    pub fn take(&mut self, n: usize) -> bool {
        if self.budget.free() + self.cached() < n {
            return false;
        }
        while self.budget.free() < n && self.evict(&[]) {}
        self.budget.try_take(n)
    }

    /// Returns `n` blocks a sequence held.
    pub fn give_back(&mut self, n: usize) {
        self.budget.give_back(n);
    }

    fn evict(&mut self, keep: &[u64]) -> bool {
        let evicted = self.prefix.as_mut().is_some_and(|p| p.evict(keep));
        if evicted {
            self.budget.give_back(1);
        }
        evicted
    }

    /// The cached blocks a sequence about to be admitted starts with: at most all but the
    /// block of its last token, whose logits the step must compute.
    pub fn cached_prefix(&mut self, s: &Sequence) -> Vec<BlockLayers> {
        let (Some(prefix), true) = (self.prefix.as_mut(), s.cache.is_empty()) else {
            return Vec::new();
        };
        let most = s.tokens.len().saturating_sub(1) / BLOCK_SIZE;
        prefix.lookup(&s.tokens, most)
    }

    /// Counts an admitted sequence's lookup: `reused` of its prompt tokens came cached.
    pub fn count_lookup(&mut self, s: &Sequence, reused: usize) {
        if self.prefix.is_some() {
            self.queried += s.request.prompt.len() as u64;
            self.hits += reused as u64;
        }
    }

    /// Takes back the blocks of a sequence leaving the engine (finished, or cancelled by
    /// its client), after caching the full blocks of its prompt that it prefilled. Caching
    /// when a sequence leaves rather than when its prompt is in means a block's keys and
    /// values are held once, not twice while the sequence runs: with 16 streams of ~1100
    /// tokens the copies had doubled the KV memory (+415 MiB at f16). The price: a request
    /// that arrives while the first one with its prefix still runs prefills it again.
    pub fn retire(&mut self, s: &mut Sequence) {
        // Its blocks go back first: the copies of its prompt take their place.
        self.budget.give_back(s.cache.blocks());
        self.remember_prompt(s);
        s.cache.release();
    }

    /// Caches the full blocks of a sequence's prefilled prompt that are not cached yet, in
    /// blocks no sequence holds (evicting older cached blocks, never its own chain).
    fn remember_prompt(&mut self, s: &Sequence) {
        let Some(prefix) = self.prefix.as_ref() else {
            return;
        };
        let prompt = &s.request.prompt;
        let hashes = prefix.chain(prompt);
        for (index, &hash) in hashes.iter().enumerate() {
            if self.prefix.as_ref().is_some_and(|p| p.contains(hash)) {
                continue;
            }
            if self.budget.free() == 0 && !self.evict(&hashes) {
                return;
            }
            let (Ok(layers), Some(prefix)) = (s.cache.copy_block(index), self.prefix.as_mut())
            else {
                return;
            };
            if self.budget.try_take(1) {
                prefix.insert(&hashes, index, prompt, layers);
            }
        }
        if let Some(prefix) = self.prefix.as_mut() {
            prefix.touch(&hashes);
        }
    }

    /// Reuse so far.
    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            queried_tokens: self.queried,
            hit_tokens: self.hits,
            cached_blocks: self.cached(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_refused_only_past_the_budget_and_nothing_is_taken_then() {
        let mut blocks = KvBlocks::new(4, true, 1);
        assert!(blocks.take(3));
        assert!(!blocks.take(2), "sequences hold 3 of 4");
        assert_eq!(blocks.used_by_sequences(), 3, "a refusal takes nothing");
        blocks.give_back(3);
        assert_eq!(blocks.used_by_sequences(), 0);
        assert!(blocks.take(4));
    }
}
