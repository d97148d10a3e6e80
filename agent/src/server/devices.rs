//! From the node's devices to a running pool of replicas: which devices the pool uses,
//! each one's memory budget, the model loaded once where the first replica goes, and the
//! replicas started from it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::cache::pressure::MemorySource;
use crate::config::AgentConfig;
use crate::engine::chat::ChatTemplate;
use crate::engine::load::load;
use crate::engine::tokenizer::ModelTokenizer;
use crate::gpu::memory::{Budget, MemoryPool, Need};
use crate::gpu::{DeviceKind, HostMemory, Inventory};
use crate::replicas::{CHUNK_BYTES, EnginePool, LaunchSettings, Launcher, PoolSettings};

/// KV cache per CPU replica unless `--kv-cache-bytes` says otherwise.
const DEFAULT_CPU_KV_BYTES: u64 = 1 << 30;

/// The host's memory as the pod's cgroup limits it.
pub fn host_memory() -> HostMemory {
    match MemorySource::system().read() {
        Ok(r) => HostMemory {
            limit: r.limit,
            used: r.used,
        },
        Err(e) => {
            tracing::warn!(error = %e, "host memory unreadable; the CPU budget is 0");
            HostMemory::default()
        }
    }
}

/// The devices the pool runs on: GPUs when it asks for them and this build can use them,
/// else `devices.cpuDevices` CPU devices.
pub fn inventory(config: &AgentConfig) -> Inventory {
    let cpus = config.devices.cpu_devices;
    let host = host_memory();
    if config.gpus == 0 {
        return Inventory::cpu("the pool asks for no GPU".to_owned(), cpus, host);
    }
    let found = crate::gpu::discover(cpus, host);
    if found.has_gpu() && !cfg!(feature = "cuda") {
        tracing::warn!("GPUs are present but this build has no CUDA; running on the CPU");
        return Inventory::cpu("built without CUDA".to_owned(), cpus, host);
    }
    found
}

/// Each device's budget: its memory less the reserve less what others use.
pub fn budgets(inventory: &Inventory, reserve_fraction: f64) -> Vec<Budget> {
    let fraction = reserve_fraction.clamp(0.0, 1.0);
    let budget = |total: u64, free: u64| Budget {
        total,
        reserve: (total as f64 * fraction) as u64,
        others: total.saturating_sub(free),
    };
    let budgets = inventory.devices.iter();
    budgets
        .map(|d| budget(d.memory_total_bytes, d.memory_free_bytes))
        .collect()
}

/// The started pool, with the tokenizer and template of the model.
#[derive(Debug)]
pub struct StartedPool {
    /// The replicas.
    pub engines: EnginePool,
    /// The tokenizer.
    pub tokenizer: ModelTokenizer,
    /// The chat template.
    pub template: ChatTemplate,
    /// The model's context length.
    pub context: usize,
}

/// Loads the model where the first replica fits best, then starts every replica.
/// `kv_cache_bytes` overrides each replica's KV budget (`--kv-cache-bytes`).
pub async fn start(
    config: &AgentConfig,
    kv_cache_bytes: Option<u64>,
    inventory: Inventory,
) -> anyhow::Result<StartedPool> {
    let budgets = budgets(&inventory, config.devices.reserve_fraction);
    let need = need(config, kv_cache_bytes, &inventory)?;
    let first = MemoryPool::new(&budgets, CHUNK_BYTES)
        .place(0, need, |_| true)
        .with_context(|| format!("{} devices, none with room", inventory.devices.len()))?;
    let device = inventory.devices[first.device].clone();
    let (path, format) = (config.model_path.clone(), config.model_format);
    let template = config.chat_template.clone();
    let target = crate::replicas::candle_device(&device).map_err(anyhow::Error::msg)?;
    let loaded =
        tokio::task::spawn_blocking(move || load(&path, format, template.as_deref(), &target))
            .await??;
    let c = &loaded.model.config;
    let context = c.context;
    let kv_bytes_per_token =
        (c.layers * 2 * c.kv_heads * c.head_dim()) as u64 * config.batching.kv_cache_dtype.bytes();
    let settings = LaunchSettings {
        model_path: config.model_path.clone(),
        format: config.model_format,
        template: config.chat_template.clone(),
        batcher: config.batcher(0),
        kv_bytes_per_token,
        warm_up: (loaded.tokenizer.encode("Hello")?, loaded.tokenizer.eos),
        need,
    };
    let launcher = Launcher::new(settings, &device, Arc::clone(&loaded.model));
    let replicas = wanted(config, &inventory);
    let pool = PoolSettings {
        inventory,
        budgets,
        replicas,
        thresholds: config.devices.health.clone(),
        poll: config.devices.poll(),
    };
    let engines = crate::replicas::start(pool, launcher).await?;
    Ok(StartedPool {
        engines,
        context,
        tokenizer: loaded.tokenizer,
        template: loaded.template,
    })
}

/// One replica per device: `gpus` of them on a GPU node (no more than it has), every CPU
/// device otherwise.
fn wanted(config: &AgentConfig, inventory: &Inventory) -> usize {
    let devices = inventory.devices.len();
    match inventory.has_gpu() {
        true => (config.gpus.max(1) as usize).min(devices),
        false => devices,
    }
}

/// What a replica needs: the weights (estimated before loading them), and the KV cache
/// asked for (all that is left on a GPU unless `--kv-cache-bytes` says).
fn need(
    config: &AgentConfig,
    kv_cache_bytes: Option<u64>,
    inventory: &Inventory,
) -> anyhow::Result<Need> {
    let on_cpu = inventory.devices.iter().all(|d| d.kind == DeviceKind::Cpu);
    let kv = kv_cache_bytes.or(on_cpu.then_some(DEFAULT_CPU_KV_BYTES));
    Ok(Need {
        weights: weights_estimate(&config.model_path)?,
        kv,
        min_kv: CHUNK_BYTES,
    })
}

/// Twice the model files' size: quantized tensors may be widened at load (Q4_1 becomes
/// Q8_0) and half-precision ones become f32 on the CPU.
fn weights_estimate(path: &Path) -> anyhow::Result<u64> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        return Ok(meta.len() * 2);
    }
    let mut bytes = 0;
    for entry in std::fs::read_dir(path)? {
        let m = entry?.metadata()?;
        if m.is_file() {
            bytes += m.len();
        }
    }
    Ok(bytes * 2)
}
