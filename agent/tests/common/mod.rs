//! What the engine tests share: the real default model, chat requests, event collection.
#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::kv::KvCacheDtype;
use inferpool_agent::engine::model::{Llama, Padding, WeightFormat};
use inferpool_agent::engine::sampling::SamplingParams;
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::generation::{GenerationEvent, GenerationRequest, Priority};
use inferpool_agent::scheduler::adaptive::SloTargets;
use inferpool_agent::scheduler::batcher::BatcherConfig;
use inferpool_agent::scheduler::handle::EngineHandle;
use inferpool_agent::scheduler::strategy::Strategy;
use inferpool_e2e::parts::default_model;

/// The default model as served (Q8_0) and its tokenizer.
pub fn load_model() -> anyhow::Result<(Arc<Llama>, ModelTokenizer)> {
    let path = default_model()?;
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&path)?)?;
    let model = Arc::new(Llama::load(&path, WeightFormat::Q8, &Device::Cpu)?);
    Ok((model, tok))
}

/// An engine loop over the default model.
pub fn engine(config: BatcherConfig) -> anyhow::Result<(EngineHandle, ModelTokenizer)> {
    let (model, tok) = load_model()?;
    Ok((EngineHandle::start(model, config), tok))
}

/// A greedy chat request for `prompt`.
pub fn request(
    tok: &ModelTokenizer,
    prompt: &str,
    max_tokens: usize,
) -> anyhow::Result<GenerationRequest> {
    let chat = format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n");
    Ok(GenerationRequest {
        prompt: tok.encode(&chat)?,
        max_tokens,
        stop_tokens: vec![tok.eos],
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        priority: Priority::Normal,
        deadline: None,
    })
}

/// Every token of a request, and how it ended.
pub async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<GenerationEvent>,
) -> (Vec<u32>, Option<GenerationEvent>) {
    let mut tokens = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenerationEvent::Token(t) => tokens.push(t),
            end => return (tokens, Some(end)),
        }
    }
    (tokens, None)
}

/// Small limits: 4 sequences, 16-token steps (prompts prefill in chunks).
pub const CONFIG: BatcherConfig = BatcherConfig {
    max_batch_size: 4,
    max_batch_tokens: 16,
    queue_limits: [8; 4],
    kv_blocks: 256,
    strategy: Strategy::Continuous,
    max_wait: Duration::ZERO,
    aging: Duration::from_secs(30),
    prefix_caching: true,
    kv_dtype: KvCacheDtype::F16,
    slo: SloTargets {
        ttft: None,
        time_per_token: None,
    },
    padding: Padding::None,
};
