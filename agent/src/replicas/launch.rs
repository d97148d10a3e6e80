//! Starting one replica on one device: the model's weights there (shared by the CPU
//! devices, which are parts of the same host memory; loaded anew on a GPU, so that a
//! recovered device gets fresh weights), an engine loop with the KV budget its placement
//! granted, and one short greedy generation before it takes requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::engine::kv::BlockBudget;
use crate::engine::load::{ModelFormat, load};
use crate::engine::model::Llama;
use crate::engine::sampling::SamplingParams;
use crate::generation::{GenerationEvent, GenerationRequest, Priority};
use crate::gpu::memory::Need;
use crate::gpu::{Device, DeviceKind};
use crate::scheduler::batcher::BatcherConfig;
use crate::scheduler::faults::StepFaults;
use crate::scheduler::handle::EngineExit;
use crate::scheduler::handle::EngineHandle;

/// What every replica is made from.
#[derive(Debug, Clone)]
pub struct LaunchSettings {
    /// The model file or directory.
    pub model_path: PathBuf,
    /// Its format.
    pub format: ModelFormat,
    /// A chat template override (checked by the first load).
    pub template: Option<String>,
    /// The engine loop's settings; `kv_blocks` is set per replica.
    pub batcher: BatcherConfig,
    /// KV cache bytes per token of the model.
    pub kv_bytes_per_token: u64,
    /// The warm-up prompt's tokens and the end-of-sequence token.
    pub warm_up: (Vec<u32>, u32),
    /// Memory each replica needs.
    pub need: Need,
}

/// Starts replicas; remembers each device's weights.
#[derive(Debug)]
pub struct Launcher {
    settings: LaunchSettings,
    /// Weights by device index (every CPU device uses the CPU entry).
    weights: Mutex<HashMap<WeightsKey, Arc<Llama>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum WeightsKey {
    Cpu,
    Cuda(u32),
}

fn key(device: &Device) -> WeightsKey {
    match device.kind {
        DeviceKind::Cpu => WeightsKey::Cpu,
        DeviceKind::Cuda => WeightsKey::Cuda(device.ordinal),
    }
}

/// Longest a replica may take to load and warm up.
const LAUNCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A started, warmed-up engine and the receiver that tells when it stops.
pub(super) type Started = (EngineHandle, oneshot::Receiver<EngineExit>);

impl Launcher {
    /// A launcher that already holds the weights loaded on `device`.
    pub fn new(settings: LaunchSettings, device: &Device, weights: Arc<Llama>) -> Self {
        Self {
            settings,
            weights: Mutex::new(HashMap::from([(key(device), weights)])),
        }
    }

    /// Starts and warms up an engine on `device` with `kv_bytes` of KV cache, within
    /// `LAUNCH_LIMIT` (a device that hangs in the load or the warm-up counts as failed).
    pub(super) async fn start(
        &self,
        device: &Device,
        kv_bytes: u64,
        faults: StepFaults,
    ) -> Result<Started, String> {
        let started = self.start_unbounded(device, kv_bytes, faults);
        match tokio::time::timeout(LAUNCH_LIMIT, started).await {
            Ok(started) => started,
            Err(_) => Err(format!(
                "{} did not load and warm up within {LAUNCH_LIMIT:?}",
                device.label()
            )),
        }
    }

    async fn start_unbounded(
        &self,
        device: &Device,
        kv_bytes: u64,
        faults: StepFaults,
    ) -> Result<Started, String> {
        let began = std::time::Instant::now();
        let weights = self.weights_on(device).await?;
        let loaded = began.elapsed();
        tracing::info!(device = %device.label(), seconds = loaded.as_secs_f64(), "model loaded");
        let blocks = BlockBudget::from_bytes(kv_bytes, self.settings.kv_bytes_per_token).total();
        let config = BatcherConfig {
            kv_blocks: blocks,
            ..self.settings.batcher
        };
        let (engine, mut exit) = EngineHandle::supervised(weights, config, faults);
        warm_up(&engine, self.warm_up_request(), &mut exit).await?;
        let warm = began.elapsed() - loaded;
        tracing::info!(device = %device.label(), seconds = warm.as_secs_f64(), "warmed up");
        Ok((engine, exit))
    }

    /// Memory each replica needs.
    pub(super) fn need(&self) -> Need {
        self.settings.need
    }

    /// Drops the weights held for a failed GPU, so that its recovery loads them anew.
    pub(super) fn forget(&self, device: &Device) {
        if device.kind == DeviceKind::Cuda {
            self.lock().remove(&key(device));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WeightsKey, Arc<Llama>>> {
        self.weights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn weights_on(&self, device: &Device) -> Result<Arc<Llama>, String> {
        if let Some(w) = self.lock().get(&key(device)) {
            return Ok(w.clone());
        }
        let s = &self.settings;
        let (path, format, template) = (s.model_path.clone(), s.format, s.template.clone());
        let target = candle_device(device)?;
        let loaded =
            tokio::task::spawn_blocking(move || load(&path, format, template.as_deref(), &target))
                .await
                .map_err(|e| format!("loading the model: {e}"))?
                .map_err(|e| format!("loading the model on {}: {e:#}", device.label()))?;
        self.lock().insert(key(device), loaded.model.clone());
        Ok(loaded.model)
    }

    fn warm_up_request(&self) -> GenerationRequest {
        let (prompt, eos) = self.settings.warm_up.clone();
        GenerationRequest {
            prompt,
            max_tokens: 2,
            stop_tokens: vec![eos],
            deadline: None,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            priority: Priority::Critical,
        }
    }
}

/// The candle device for a discovered one.
pub fn candle_device(device: &Device) -> Result<candle_core::Device, String> {
    match device.kind {
        DeviceKind::Cpu => Ok(candle_core::Device::Cpu),
        DeviceKind::Cuda => candle_core::Device::new_cuda(device.ordinal as usize)
            .map_err(|e| format!("{} cannot be used by this build: {e}", device.label())),
    }
}

/// One short greedy generation through the new engine, so that the first real request
/// does not pay for first-touch allocations and a broken device shows before it serves.
async fn warm_up(
    engine: &EngineHandle,
    request: GenerationRequest,
    exit: &mut oneshot::Receiver<EngineExit>,
) -> Result<(), String> {
    let mut events = engine.generate(request).await.map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(GenerationEvent::Token(_)) => {}
                Some(GenerationEvent::Finished { .. }) => return Ok(()),
                Some(GenerationEvent::Failed(e)) => return Err(format!("warm-up failed: {e}")),
                Some(GenerationEvent::Expired) => return Err("warm-up expired".to_owned()),
                None => return Err("the engine stopped during warm-up".to_owned()),
            },
            stopped = &mut *exit => {
                let reason = stopped.map_or_else(|_| "stopped".to_owned(), |e| e.reason);
                return Err(format!("the engine stopped during warm-up: {reason}"));
            }
        }
    }
}
