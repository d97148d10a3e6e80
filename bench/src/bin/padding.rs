//! Padding benchmark on the default model (CPU): the time of one prefill step over prompts
//! of mixed lengths, of one decode step over a batch that is not a power of two, and of
//! one embedding batch, with each `batching.padding` choice side by side in one run
//! (`none`, the ragged rows, is the reference).
//!
//! Run with `bench/padding` (release build for this CPU).

use std::time::{Duration, Instant};

use candle_core::Device;
use clap::Parser;
use inferpool_agent::engine::embed::Embedder;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::model::{KvCache, Llama, Padding, SeqStep, WeightFormat};
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_e2e::parts::{default_model, embedding_model};

#[derive(Debug, Parser)]
struct Args {
    /// Repetitions per figure (the median is printed).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

const PADDINGS: [Padding; 3] = [Padding::None, Padding::Longest, Padding::Bucket];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("{}", inferpool_bench::cpu_header());
    let path = default_model()?;
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&path)?)?;
    let model = Llama::load(&path, WeightFormat::Q8, &Device::Cpu)?;
    let prompts: Vec<Vec<u32>> = [3, 9, 20, 40]
        .iter()
        .map(|&n| tok.encode(&"Tell me about the sea. ".repeat(n)))
        .collect::<Result<_, _>>()?;
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    println!("prefill of {lens:?} tokens in one step; decode of 12 sequences; 16 embeddings");
    println!(
        "{:<8} {:>12} {:>12} {:>12}",
        "padding", "prefill ms", "decode ms", "embed ms"
    );
    let embedder = Embedder::load(&embedding_model()?, &Device::Cpu)?;
    let texts: Vec<String> = (0..16)
        .map(|i| "A sentence about ships and the sea. ".repeat(1 + i % 5))
        .collect();
    for padding in PADDINGS {
        let prefill = median(args.reps, || prefill(&model, &prompts, padding))?;
        let decode = median(args.reps, || decode(&model, &prompts[0], 12, padding))?;
        let embed = median(args.reps, || {
            let t = Instant::now();
            embedder.embed_padded(&texts, padding)?;
            Ok(t.elapsed())
        })?;
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>12.1}",
            format!("{padding:?}").to_lowercase(),
            ms(prefill),
            ms(decode),
            ms(embed)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<Duration> {
    let mut times = (0..reps.max(1))
        .map(|_| f())
        .collect::<Result<Vec<_>, _>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// One step prefilling every prompt.
fn prefill(model: &Llama, prompts: &[Vec<u32>], padding: Padding) -> anyhow::Result<Duration> {
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| KvCache::default()).collect();
    let mut batch: Vec<SeqStep<'_>> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(tokens, cache)| SeqStep { tokens, cache })
        .collect();
    let t = Instant::now();
    model.step_padded(&mut batch, padding)?;
    Ok(t.elapsed())
}

/// One decode step of `n` sequences that each prefilled `prompt`.
fn decode(model: &Llama, prompt: &[u32], n: usize, padding: Padding) -> anyhow::Result<Duration> {
    let mut caches: Vec<KvCache> = (0..n).map(|_| KvCache::default()).collect();
    for cache in &mut caches {
        model.step(&mut [SeqStep {
            tokens: prompt,
            cache,
        }])?;
    }
    let next = [prompt[0]];
    let mut batch: Vec<SeqStep<'_>> = caches
        .iter_mut()
        .map(|cache| SeqStep {
            tokens: &next,
            cache,
        })
        .collect();
    let t = Instant::now();
    model.step_padded(&mut batch, padding)?;
    Ok(t.elapsed())
}
