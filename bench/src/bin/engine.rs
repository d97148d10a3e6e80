//! Engine benchmark on the default model (CPU): decode throughput of inferpool's batched
//! forward at batch 1, 4 and 16, with the KV cache in f32 and in f16, next to candle's own
//! `quantized_llama` (single stream, the same file and threads) as the reference, in the
//! same run. `--context` lengthens the prompt, where attention's reading of the cache
//! weighs most.
//!
//! Run with `bench/engine` (release build for this CPU).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Parser;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::kv::KvCacheDtype;
use inferpool_agent::engine::model::{KvCache, Llama, SeqStep, WeightFormat, argmax};
use inferpool_agent::engine::tokenizer::ModelTokenizer;

#[derive(Debug, Parser)]
struct Args {
    /// The GGUF model (default: the one hack/fetch-models fetched).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Tokens decoded per sequence.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Only the Q8 engine (what the agent runs), e.g. under a profiler.
    #[arg(long)]
    q8_only: bool,
    /// Tokens of context each sequence has before decoding (the prompt repeated up to it;
    /// 0: the short prompt alone).
    #[arg(long, default_value_t = 0)]
    context: usize,
}

const PROMPT: &str =
    "<|im_start|>user\nWrite a short paragraph about the sea.<|im_end|>\n<|im_start|>assistant\n";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = match args.model {
        Some(p) => p,
        None => default_model_path(),
    };
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&path)?)?;
    let mut prompt = tok.encode(PROMPT)?;
    let short = prompt.clone();
    while prompt.len() < args.context {
        prompt.extend_from_slice(&short);
    }
    println!(
        "prompt {} tokens, {} decoded per sequence, threads {}",
        prompt.len(),
        args.tokens,
        threads()
    );
    let formats = if args.q8_only {
        vec![WeightFormat::Q8]
    } else {
        let reference = reference(&path, &prompt, args.tokens)?;
        println!(
            "reference candle quantized_llama (Q4_1 as stored), batch 1: {reference:.1} tok/s"
        );
        vec![WeightFormat::AsStored, WeightFormat::Q8]
    };
    for format in formats {
        let model = Llama::load(&path, format, &Device::Cpu)?;
        for kv in [KvCacheDtype::F32, KvCacheDtype::F16] {
            for batch in [1, 4, 16] {
                let rate = ours(&model, &prompt, batch, args.tokens, kv)?;
                println!(
                    "inferpool engine ({format:?}, KV {kv:?}), batch {batch:>2}: {rate:.1} tok/s aggregate"
                );
            }
        }
    }
    Ok(())
}

fn threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
}

fn default_model_path() -> PathBuf {
    let cache = std::env::var_os("INFERPOOL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/inferpool/models")
        });
    cache.join("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Decode tokens/s of candle's quantized llama, single stream (prefill not counted).
fn reference(path: &PathBuf, prompt: &[u32], n: usize) -> anyhow::Result<f64> {
    let mut file = std::fs::File::open(path)?;
    let content = candle_core::quantized::gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(content, &mut file, &Device::Cpu)?;
    let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let mut next = argmax(&model.forward(&input, 0)?.squeeze(0)?)?;
    let start = Instant::now();
    for i in 0..n {
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        next = argmax(&model.forward(&input, prompt.len() + i)?.squeeze(0)?)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Aggregate decode tokens/s of `batch` sequences decoding together (prefill not counted).
fn ours(
    model: &Llama,
    prompt: &[u32],
    batch: usize,
    n: usize,
    kv: KvCacheDtype,
) -> anyhow::Result<f64> {
    let mut caches: Vec<KvCache> = (0..batch).map(|_| KvCache::new(kv)).collect();
    let mut next = vec![0u32; batch];
    for (cache, next) in caches.iter_mut().zip(next.iter_mut()) {
        let logits = model.step(&mut [SeqStep {
            tokens: prompt,
            cache,
        }])?;
        *next = argmax(&logits.get(0)?)?;
    }
    let start = Instant::now();
    for _ in 0..n {
        let tokens: Vec<[u32; 1]> = next.iter().map(|t| [*t]).collect();
        let mut steps: Vec<SeqStep<'_>> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| SeqStep { tokens: t, cache })
            .collect();
        let logits = model.step(&mut steps)?;
        for (i, t) in next.iter_mut().enumerate() {
            *t = argmax(&logits.get(i)?)?;
        }
    }
    Ok((batch * n) as f64 / start.elapsed().as_secs_f64())
}
