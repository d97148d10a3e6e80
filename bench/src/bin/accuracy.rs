//! Accuracy of the engine's weight formats on the default model: greedy continuations of
//! 8 chat prompts (48 tokens each) with the weights as stored (Q4_1, what llama.cpp runs)
//! and as the agent runs them (Q8_0, on the repacked AVX512-VNNI kernels where the CPU has
//! them unless `INFERPOOL_NO_REPACK=1`), each compared with the file's exact values in f32:
//! how many tokens agree before the first difference, and the logit error on the prompts.
//!
//! Run with `bench/accuracy` (both kernel choices, side by side).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use clap::Parser;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::model::{
    KvCache, Llama, NO_REPACK_ENV, SeqStep, WeightFormat, argmax,
};
use inferpool_agent::engine::tokenizer::ModelTokenizer;

#[derive(Debug, Parser)]
struct Args {
    /// The GGUF model.
    #[arg(long)]
    model: PathBuf,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 48)]
    tokens: usize,
}

const PROMPTS: [&str; 8] = [
    "Write a short paragraph about the sea.",
    "What is the capital of France?",
    "Write a Python function that reverses a list.",
    "Explain why the sky is blue.",
    "List three fruits and their colours.",
    "Tell me a joke about cats.",
    "How do I boil an egg?",
    "Summarise the plot of Romeo and Juliet.",
];

/// The prompt's logits and the greedy continuation of `n` tokens.
fn run(model: &Llama, prompt: &[u32], n: usize) -> anyhow::Result<(Tensor, Vec<u32>)> {
    let mut cache = KvCache::default();
    let first = model.step(&mut [SeqStep {
        tokens: prompt,
        cache: &mut cache,
    }])?;
    let logits = first.squeeze(0)?;
    let mut next = argmax(&logits)?;
    let mut out = vec![next];
    while out.len() < n {
        let step = model.step(&mut [SeqStep {
            tokens: &[next],
            cache: &mut cache,
        }])?;
        next = argmax(&step.squeeze(0)?)?;
        out.push(next);
    }
    Ok((logits, out))
}

/// Tokens agreeing before the first difference, and the mean absolute logit error.
#[derive(Default)]
struct Agreement {
    tokens: usize,
    logit_error: f64,
}

fn compare(
    model: &Llama,
    reference: &(Tensor, Vec<u32>),
    prompt: &[u32],
    n: usize,
) -> anyhow::Result<Agreement> {
    let (logits, tokens) = run(model, prompt, n)?;
    let same = tokens
        .iter()
        .zip(&reference.1)
        .take_while(|(a, b)| a == b)
        .count();
    let error = (&logits - &reference.0)?
        .abs()?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(Agreement {
        tokens: same,
        logit_error: f64::from(error),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&args.model)?)?;
    let load = |format| Llama::load(&args.model, format, &Device::Cpu);
    let (exact, stored, agent) = (
        load(WeightFormat::F32)?,
        load(WeightFormat::AsStored)?,
        load(WeightFormat::Q8)?,
    );
    let kernels = if std::env::var(NO_REPACK_ENV).is_ok_and(|v| v == "1") {
        "generic Q8_0 kernels"
    } else {
        "repacked kernels where the CPU has AVX512-VNNI"
    };
    println!(
        "agreement with f32 over {} tokens per prompt; agent format: Q8_0, {kernels}",
        args.tokens
    );
    println!(
        "| prompt | Q4_1 tokens | Q4_1 logit err | agent tokens | agent logit err |\n|---|---:|---:|---:|---:|"
    );
    let (mut total_stored, mut total_agent) = (Agreement::default(), Agreement::default());
    for q in PROMPTS {
        let prompt = tok.encode(&format!(
            "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
        ))?;
        let reference = run(&exact, &prompt, args.tokens)?;
        let s = compare(&stored, &reference, &prompt, args.tokens)?;
        let a = compare(&agent, &reference, &prompt, args.tokens)?;
        println!(
            "| {q} | {} | {:.3} | {} | {:.3} |",
            s.tokens, s.logit_error, a.tokens, a.logit_error
        );
        total_stored.tokens += s.tokens;
        total_stored.logit_error += s.logit_error / PROMPTS.len() as f64;
        total_agent.tokens += a.tokens;
        total_agent.logit_error += a.logit_error / PROMPTS.len() as f64;
    }
    println!(
        "| all | {} | {:.3} | {} | {:.3} |",
        total_stored.tokens, total_stored.logit_error, total_agent.tokens, total_agent.logit_error
    );
    Ok(())
}
