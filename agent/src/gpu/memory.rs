//! The device memory pool: each device's budget (total less a reserve less what other
//! processes use) cut into equal chunks. A replica's weights take a contiguous run of
//! chunks on the device that fits them best (the smallest free budget that holds them);
//! its KV block pool takes chunks from what is left there. Released replicas leave holes,
//! which is what fragmentation measures. Plain values: no device calls here.

use serde::Serialize;

/// What a device may give the pool, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Device memory.
    pub total: u64,
    /// Kept back for activations, the CUDA context and the allocator's slack.
    pub reserve: u64,
    /// In use by other processes (or, for the CPU, by everything else in the pod).
    pub others: u64,
}

impl Budget {
    /// What is left for the pool.
    pub fn usable(&self) -> u64 {
        self.total
            .saturating_sub(self.reserve)
            .saturating_sub(self.others)
    }
}

/// Who holds a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Weights(u32),
    Kv(u32),
}

/// What one replica needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// The weights, once loaded.
    pub weights: u64,
    /// KV cache wanted: this much, or (`None`) all that is left on the device.
    pub kv: Option<u64>,
    /// Least KV cache worth running with.
    pub min_kv: u64,
}

/// Where a replica went and what it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Index of the device.
    pub device: usize,
    /// KV cache granted, in bytes (whole chunks).
    pub kv_bytes: u64,
}

/// Why a replica could not be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No eligible device has room.
    #[error("no device has {needed} bytes free for the weights and the least KV cache")]
    NoRoom {
        /// Weights plus the least KV cache, in bytes.
        needed: u64,
    },
}

/// One device's memory as metrics and load reports show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DeviceMemory {
    /// The pool's share of the device (its budget), bytes.
    pub budget: u64,
    /// Held by weights, bytes.
    pub weights: u64,
    /// Held by KV block pools, bytes.
    pub kv: u64,
    /// Not held, bytes.
    pub free: u64,
    /// 0 when the free chunks are one run; towards 1 as they scatter (1 − largest run /
    /// free).
    pub fragmentation: f64,
}

#[derive(Clone, Debug)]
struct DeviceChunks {
    chunks: Vec<Option<Holder>>,
}

impl DeviceChunks {
    fn free_count(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_none()).count()
    }

    /// Free runs as (start, length).
    fn free_runs(&self) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, c) in self
            .chunks
            .iter()
            .chain([&Some(Holder::Weights(u32::MAX))])
            .enumerate()
        {
            match (c, start) {
                (None, None) => start = Some(i),
                (Some(_), Some(s)) => {
                    runs.push((s, i - s));
                    start = None;
                }
                _ => {}
            }
        }
        runs
    }

    /// The smallest free run that holds `n` chunks: its start.
    fn best_run(&self, n: usize) -> Option<usize> {
        let runs = self.free_runs().into_iter().filter(|&(_, len)| len >= n);
        runs.min_by_key(|&(_, len)| len).map(|(start, _)| start)
    }

    fn held_by(&self, matches: impl Fn(Holder) -> bool) -> usize {
        self.chunks
            .iter()
            .flatten()
            .filter(|h| matches(**h))
            .count()
    }
}

/// Every device's chunks.
#[derive(Clone, Debug)]
pub struct MemoryPool {
    chunk_bytes: u64,
    devices: Vec<DeviceChunks>,
}

impl MemoryPool {
    /// A pool over these budgets, in chunks of `chunk_bytes` (a budget's remainder below
    /// one chunk is left unused).
    pub fn new(budgets: &[Budget], chunk_bytes: u64) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        let devices = budgets
            .iter()
            .map(|b| DeviceChunks {
                chunks: vec![None; usize::try_from(b.usable() / chunk_bytes).unwrap_or(0)],
            })
            .collect();
        Self {
            chunk_bytes,
            devices,
        }
    }

    fn chunks_for(&self, bytes: u64) -> usize {
        usize::try_from(bytes.div_ceil(self.chunk_bytes)).unwrap_or(usize::MAX)
    }

    /// Places `replica` on the eligible device that fits it best: the one with the fewest
    /// free chunks that still has a run for the weights and room for the least KV cache.
    pub fn place(
        &mut self,
        replica: u32,
        need: Need,
        eligible: impl Fn(usize) -> bool,
    ) -> Result<Placement, PlacementError> {
        let best = (0..self.devices.len())
            .filter(|&d| eligible(d) && self.fits(d, need))
            .min_by_key(|&d| self.devices[d].free_count());
        match best {
            Some(device) => Ok(self.take(device, replica, need)),
            None => Err(PlacementError::NoRoom {
                needed: need.weights + need.min_kv,
            }),
        }
    }

    fn fits(&self, device: usize, need: Need) -> bool {
        let d = &self.devices[device];
        let weights = self.chunks_for(need.weights);
        d.best_run(weights).is_some() && d.free_count() >= weights + self.chunks_for(need.min_kv)
    }

    fn take(&mut self, device: usize, replica: u32, need: Need) -> Placement {
        let weights = self.chunks_for(need.weights);
        let kv_wanted = need.kv.map_or(usize::MAX, |kv| self.chunks_for(kv));
        let d = &mut self.devices[device];
        let start = d.best_run(weights).unwrap_or(0);
        for c in &mut d.chunks[start..start + weights] {
            *c = Some(Holder::Weights(replica));
        }
        let mut granted = 0;
        for c in d.chunks.iter_mut().filter(|c| c.is_none()).take(kv_wanted) {
            *c = Some(Holder::Kv(replica));
            granted += 1;
        }
        Placement {
            device,
            kv_bytes: granted as u64 * self.chunk_bytes,
        }
    }

    /// Gives back everything `replica` holds.
    pub fn release(&mut self, replica: u32) {
        for c in self.devices.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
            if matches!(c, Some(Holder::Weights(r) | Holder::Kv(r)) if *r == replica) {
                *c = None;
            }
        }
    }

    /// One device's memory.
    pub fn memory(&self, device: usize) -> DeviceMemory {
        let Some(d) = self.devices.get(device) else {
            return DeviceMemory::default();
        };
        let bytes = |n: usize| n as u64 * self.chunk_bytes;
        let free = d.free_count();
        let largest = d.free_runs().iter().map(|&(_, len)| len).max().unwrap_or(0);
        DeviceMemory {
            budget: bytes(d.chunks.len()),
            weights: bytes(d.held_by(|h| matches!(h, Holder::Weights(_)))),
            kv: bytes(d.held_by(|h| matches!(h, Holder::Kv(_)))),
            free: bytes(free),
            fragmentation: match free {
                0 => 0.0,
                _ => 1.0 - largest as f64 / free as f64,
            },
        }
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
