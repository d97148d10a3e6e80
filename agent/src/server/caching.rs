//! The response cache's life in the agent process: built once the models are loaded (a
//! partition per served model, named by the model's revision), filled from the last
//! snapshot, shrunk when memory runs high, and snapshotted periodically and at drain.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::cache::pressure::MemorySource;
use crate::cache::{ModelId, PartitionSpec, ResponseCache};
use crate::cache_config::SnapshotPlan;
use crate::config::AgentConfig;

/// The served models, for the cache's partitions.
#[derive(Debug, Clone)]
pub struct ServedModels<'a> {
    /// The generation model's name, and its file or directory.
    pub generation: (&'a str, &'a Path),
    /// The embedding model's name and directory, when one is loaded.
    pub embedding: Option<(&'a str, &'a Path)>,
}

/// The cache the pool asks for, filled from its snapshot, or `None` when it is off.
pub async fn build(
    config: &AgentConfig,
    models: &ServedModels<'_>,
) -> anyhow::Result<Option<Arc<ResponseCache>>> {
    let Some(settings) = config.cache.settings()? else {
        return Ok(None);
    };
    anyhow::ensure!(
        settings.semantic.is_none() || models.embedding.is_some(),
        "cache.semantic needs the embedding model (--embedding-model)"
    );
    let template = config.chat_template.as_deref().unwrap_or_default();
    let (name, path) = models.generation;
    let embedding_dir = models.embedding.map(|(_, dir)| dir);
    let mut specs = vec![PartitionSpec {
        model: ModelId {
            name: name.to_owned(),
            revision: generation_revision(path, template, embedding_dir),
        },
        semantic: true,
    }];
    if let Some((name, path)) = models.embedding {
        specs.push(PartitionSpec {
            model: ModelId {
                name: name.to_owned(),
                revision: revision(path, ""),
            },
            semantic: false,
        });
    }
    let cache = Arc::new(ResponseCache::new(settings, specs));
    if let Some(plan) = config.cache.snapshot_plan(config.cache_dir.as_deref())? {
        // Loaded before the agent is ready (a restarted agent answers from it at once),
        // off the async threads (seconds at 100,000 entries).
        let (loading, at) = (cache.clone(), plan.clone());
        tokio::task::spawn_blocking(move || restore(&loading, &at)).await?;
        tokio::spawn(snapshots(cache.clone(), plan));
    }
    tokio::spawn(relieve_pressure(
        cache.clone(),
        config.cache.pressure_check(),
    ));
    Ok(Some(cache))
}

/// The generation model's revision: its files, the chat template, and the embedding model
/// whose vectors its entries carry for semantic matching.
pub fn generation_revision(model: &Path, template: &str, embedding: Option<&Path>) -> String {
    let embedder = embedding.map_or_else(String::new, |dir| revision(dir, ""));
    format!("{}-{embedder}", revision(model, template))
}

/// What identifies a model's answers: its files' sizes and modification times, and the
/// chat template override. A new model file or template gives a new revision, and the
/// snapshot's old entries are left out.
pub fn revision(path: &Path, template: &str) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut files = vec![path.to_owned()];
    if let Ok(dir) = std::fs::read_dir(path) {
        files = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
    }
    for file in files {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hasher.update(&meta.len().to_le_bytes());
        hasher.update(&modified.map_or(0, |d| d.as_nanos()).to_le_bytes());
    }
    hasher.update(template.as_bytes());
    format!("{:08x}", hasher.finalize())
}

/// Loads the snapshot; one that cannot be read means starting empty, never failing.
fn restore(cache: &ResponseCache, plan: &SnapshotPlan) {
    let started = std::time::Instant::now();
    match cache.restore(&plan.path) {
        Ok(entries) => {
            tracing::info!(entries, took = ?started.elapsed(), path = %plan.path.display(), "response cache restored")
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %plan.path.display(), "response cache snapshot unreadable; starting empty")
        }
    }
}

/// Writes the snapshot now.
pub fn save(cache: &ResponseCache, plan: &SnapshotPlan) {
    let started = std::time::Instant::now();
    match cache.save(&plan.path) {
        Ok((entries, bytes)) => {
            tracing::info!(entries, bytes, took = ?started.elapsed(), "response cache snapshot written")
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %plan.path.display(), "response cache snapshot failed")
        }
    }
}

async fn snapshots(cache: Arc<ResponseCache>, plan: SnapshotPlan) {
    let mut every = tokio::time::interval(plan.every);
    every.tick().await;
    loop {
        every.tick().await;
        let (cache, plan) = (cache.clone(), plan.clone());
        // File writes and fsync block: off the async threads.
        if tokio::task::spawn_blocking(move || save(&cache, &plan))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Readings after a shrink that do not shrink again: memory given back to the allocator
/// shows in the working set only after a while, and shrinking on every reading meanwhile
/// would empty the cache.
const COOLDOWN_TICKS: u32 = 3;

async fn relieve_pressure(cache: Arc<ResponseCache>, every: std::time::Duration) {
    let source = MemorySource::system();
    let mut ticks = tokio::time::interval(every);
    let mut cooldown = 0;
    loop {
        ticks.tick().await;
        if cooldown > 0 {
            cooldown -= 1;
            continue;
        }
        let Ok(reading) = source.read() else {
            continue;
        };
        let shrinking = cache.clone();
        // Sorting and dropping many entries is blocking work.
        let Ok(freed) = tokio::task::spawn_blocking(move || shrinking.relieve(reading)).await
        else {
            return;
        };
        if freed > 0 {
            cooldown = COOLDOWN_TICKS;
            tracing::info!(
                freed,
                used = reading.used,
                limit = reading.limit,
                "memory pressure: response cache shrunk"
            );
        }
    }
}

/// The final snapshot at drain, when persistence is on.
pub async fn save_at_drain(
    cache: Option<Arc<ResponseCache>>,
    config: &AgentConfig,
) -> anyhow::Result<()> {
    let (Some(cache), Some(plan)) = (
        cache,
        config.cache.snapshot_plan(config.cache_dir.as_deref())?,
    ) else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || save(&cache, &plan))
        .await
        .context("the snapshot task failed")
}
