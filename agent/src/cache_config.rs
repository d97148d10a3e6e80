//! The response cache's settings as the pool spells them in `agent.json` (`spec.cache`),
//! checked and turned into what the cache and its background tasks take.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CacheSettings;
use crate::cache::SemanticSettings;
use crate::cache::pressure::Watermarks;

/// `spec.cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CacheConfig {
    /// Cache answers to deterministic requests.
    pub enabled: bool,
    /// Most memory, as a Kubernetes quantity (`256Mi`).
    pub capacity: String,
    /// How long an entry stays valid.
    pub ttl_seconds: u64,
    /// Semantic matching.
    pub semantic: SemanticConfig,
    /// Shrinking under memory pressure.
    pub memory_pressure: PressureConfig,
    /// Snapshots that survive restarts.
    pub persistence: PersistenceConfig,
}

/// `spec.cache.semantic`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SemanticConfig {
    /// On or off.
    pub enabled: bool,
    /// Least cosine similarity.
    pub threshold: f32,
}

/// `spec.cache.memoryPressure`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PressureConfig {
    /// Fraction of the memory limit above which the cache shrinks.
    pub high_watermark: f64,
    /// Fraction of the limit the shrink aims for.
    pub low_watermark: f64,
    /// How often memory is read.
    pub check_seconds: u64,
}

/// `spec.cache.persistence` (the volume's size and class are the controller's).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistenceConfig {
    /// On or off.
    pub enabled: bool,
    /// Seconds between snapshots (one more is written when the agent drains).
    pub snapshot_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: "256Mi".to_owned(),
            ttl_seconds: 3600,
            semantic: SemanticConfig::default(),
            memory_pressure: PressureConfig::default(),
            persistence: PersistenceConfig::default(),
        }
    }
}

impl Default for SemanticConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.95,
        }
    }
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            high_watermark: 0.9,
            low_watermark: 0.8,
            check_seconds: 5,
        }
    }
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            snapshot_seconds: 300,
        }
    }
}

/// Settings that do not hold together.
#[derive(Debug, thiserror::Error)]
pub enum CacheConfigError {
    /// Not a size.
    #[error("cache.capacity: {0:?} is not a quantity such as 256Mi")]
    Quantity(String),
    /// Watermarks out of order or range.
    #[error(
        "cache.memoryPressure: need 0 < lowWatermark <= highWatermark <= 1, got {low} and {high}"
    )]
    Watermarks {
        /// The low one.
        low: f64,
        /// The high one.
        high: f64,
    },
    /// A threshold outside (0, 1].
    #[error("cache.semantic.threshold: {0} is not in (0, 1]")]
    Threshold(f32),
    /// Persistence without a place to write.
    #[error("cache.persistence is on but the agent has no cacheDir")]
    NoDirectory,
}

/// Where and how often snapshots are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// The snapshot file.
    pub path: PathBuf,
    /// Time between snapshots.
    pub every: Duration,
}

/// Dimension of all-MiniLM-L6-v2's vectors, the embedding model semantic matching uses.
pub const SEMANTIC_DIM: usize = 384;

impl CacheConfig {
    /// The cache's settings, or `None` when it is off.
    pub fn settings(&self) -> Result<Option<CacheSettings>, CacheConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let capacity_bytes = quantity_bytes(&self.capacity)
            .ok_or_else(|| CacheConfigError::Quantity(self.capacity.clone()))?;
        Ok(Some(CacheSettings {
            capacity_bytes,
            ttl: Duration::from_secs(self.ttl_seconds.max(1)),
            semantic: self.semantic_settings()?,
            watermarks: self.watermarks()?,
        }))
    }

    fn semantic_settings(&self) -> Result<Option<SemanticSettings>, CacheConfigError> {
        let threshold = self.semantic.threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(CacheConfigError::Threshold(threshold));
        }
        Ok(self.semantic.enabled.then_some(SemanticSettings {
            threshold,
            dim: SEMANTIC_DIM,
        }))
    }

    fn watermarks(&self) -> Result<Watermarks, CacheConfigError> {
        let (low, high) = (
            self.memory_pressure.low_watermark,
            self.memory_pressure.high_watermark,
        );
        if !(low > 0.0 && low <= high && high <= 1.0) {
            return Err(CacheConfigError::Watermarks { low, high });
        }
        Ok(Watermarks { high, low })
    }

    /// How often memory is read.
    pub fn pressure_check(&self) -> Duration {
        Duration::from_secs(self.memory_pressure.check_seconds.max(1))
    }

    /// The snapshot's file and period, when persistence is on (`dir`: the agent's cache
    /// directory).
    pub fn snapshot_plan(
        &self,
        dir: Option<&Path>,
    ) -> Result<Option<SnapshotPlan>, CacheConfigError> {
        if !(self.enabled && self.persistence.enabled) {
            return Ok(None);
        }
        let dir = dir.ok_or(CacheConfigError::NoDirectory)?;
        Ok(Some(SnapshotPlan {
            path: dir.join("response-cache.snapshot"),
            every: Duration::from_secs(self.persistence.snapshot_seconds.max(1)),
        }))
    }
}

/// Bytes in a Kubernetes quantity: a whole number with an optional binary (`Ki`..`Ti`) or
/// decimal (`k`..`T`) suffix.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let digits = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_are_kubernetes_quantities() {
        assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        let off = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(matches!(off.settings(), Ok(None)));
        let bad = CacheConfig {
            capacity: "lots".into(),
            ..CacheConfig::default()
        };
        assert!(bad.settings().is_err());
    }

    #[test]
    fn the_pools_fields_are_read_and_checked() {
        let c: CacheConfig = serde_json::from_value(serde_json::json!({
            "enabled": true, "capacity": "1Mi", "ttlSeconds": 7,
            "semantic": {"enabled": true, "threshold": 0.9},
            "memoryPressure": {"highWatermark": 0.5, "lowWatermark": 0.25, "checkSeconds": 2},
            "persistence": {"enabled": true, "volumeSize": "1Gi", "snapshotSeconds": 30}
        }))
        .unwrap();
        let s = c.settings().unwrap().unwrap();
        assert_eq!(s.capacity_bytes, 1 << 20);
        assert_eq!(s.semantic.map(|s| s.threshold), Some(0.9));
        assert_eq!(
            s.watermarks,
            Watermarks {
                high: 0.5,
                low: 0.25
            }
        );
        assert_eq!(c.pressure_check(), Duration::from_secs(2));
        let plan = c.snapshot_plan(Some(Path::new("d"))).unwrap().unwrap();
        assert_eq!(plan.every, Duration::from_secs(30));
        assert!(c.snapshot_plan(None).is_err());
        let mut bad = c.clone();
        bad.memory_pressure.low_watermark = 0.6;
        assert!(bad.settings().is_err());
    }
}
