//! Prefix reuse in the engine loop on the real default model: a prompt that starts with
//! blocks another request prefilled copies them in, the reuse is counted, and cached
//! blocks give way to requests that need the room.

mod common;

use std::time::Duration;

use common::{CONFIG, collect, engine};
use inferpool_agent::engine::kv::BLOCK_SIZE;
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::generation::{GenerationEvent, GenerationRequest};
use inferpool_agent::scheduler::batcher::{BatcherConfig, Load};
use inferpool_agent::scheduler::handle::EngineHandle;

const SYSTEM: &str = "You are the help desk of a shipping company. Answer in one short \
    sentence. Name the port when you know it. Never invent tracking numbers, prices or \
    dates; say that you do not know instead, and offer to pass the question on.";

fn chat(tok: &ModelTokenizer, user: &str, max_tokens: usize) -> anyhow::Result<GenerationRequest> {
    let text = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let mut request = common::request(tok, "", max_tokens)?;
    request.prompt = tok.encode(&text)?;
    Ok(request)
}

/// Full blocks at the start of `a` and `b` that hold the same tokens.
fn shared_blocks(a: &[u32], b: &[u32]) -> usize {
    a.chunks_exact(BLOCK_SIZE)
        .zip(b.chunks_exact(BLOCK_SIZE))
        .take_while(|(x, y)| x == y)
        .count()
}

/// Runs `request` to its end; the load once its blocks came back.
async fn run(engine: &EngineHandle, request: &GenerationRequest) -> anyhow::Result<Load> {
    let (tokens, end) = tokio::time::timeout(
        Duration::from_secs(120),
        collect(engine.generate(request.clone()).await?),
    )
    .await?;
    assert!(
        matches!(end, Some(GenerationEvent::Finished { .. })) && !tokens.is_empty(),
        "{end:?}"
    );
    let mut load = engine.load();
    let idle = load.wait_for(|l| l.running == 0 && l.kv_blocks_used == 0);
    Ok(*tokio::time::timeout(Duration::from_secs(30), idle).await??)
}

const WHOLE_PROMPTS: BatcherConfig = BatcherConfig {
    max_batch_tokens: 512,
    ..CONFIG
};

#[tokio::test]
async fn a_shared_system_prompt_is_prefilled_once_and_counted() -> anyhow::Result<()> {
    let (engine, tok) = engine(WHOLE_PROMPTS)?;
    let first = chat(&tok, "Where is my parcel?", 8)?;
    let second = chat(&tok, "Can I change the delivery address?", 8)?;
    let shared = shared_blocks(&first.prompt, &second.prompt);
    assert!(shared >= 3, "the system prompt spans {shared} blocks");

    let load = run(&engine, &first).await?;
    assert_eq!(load.prefix.queried_tokens, first.prompt.len() as u64);
    assert_eq!(load.prefix.hit_tokens, 0, "nothing was cached before");
    assert_eq!(load.prefix.cached_blocks, first.prompt.len() / BLOCK_SIZE);

    let load = run(&engine, &second).await?;
    let queried = (first.prompt.len() + second.prompt.len()) as u64;
    assert_eq!(load.prefix.queried_tokens, queried);
    assert_eq!(
        load.prefix.hit_tokens,
        (shared * BLOCK_SIZE) as u64,
        "the second request reuses every block it shares with the first"
    );
    // The same request again reuses all of its full blocks but the one of its last token.
    let load = run(&engine, &second).await?;
    let most = (second.prompt.len() - 1) / BLOCK_SIZE;
    assert_eq!(
        load.prefix.hit_tokens,
        ((shared + most) * BLOCK_SIZE) as u64
    );
    Ok(())
}

#[tokio::test]
async fn with_prefix_caching_off_nothing_is_kept_or_reused() -> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        prefix_caching: false,
        ..WHOLE_PROMPTS
    })?;
    let request = chat(&tok, "Where is my parcel?", 4)?;
    run(&engine, &request).await?;
    let load = run(&engine, &request).await?;
    assert_eq!(load.prefix, Default::default());
    Ok(())
}

#[tokio::test]
async fn cached_blocks_give_way_to_a_request_that_needs_the_room() -> anyhow::Result<()> {
    let probe = engine(WHOLE_PROMPTS)?;
    let cached = chat(&probe.1, "Where is my parcel?", 4)?;
    let cached_blocks = cached.prompt.len() / BLOCK_SIZE;
    // A budget that holds the first request and its cached blocks side by side; the second
    // request needs all of it, so admitting it must evict, never preempt or refuse.
    let mut big = common::request(&probe.1, "Tell me a long story about ships.", 0)?;
    let kv_blocks = 2 * cached_blocks + 2;
    big.max_tokens = kv_blocks * BLOCK_SIZE - big.prompt.len();
    big.stop_tokens.clear();
    drop(probe);
    let (engine, _) = engine(BatcherConfig {
        kv_blocks,
        ..WHOLE_PROMPTS
    })?;
    let load = run(&engine, &cached).await?;
    assert_eq!(load.prefix.cached_blocks, cached_blocks);
    let load = run(&engine, &big).await?;
    assert_eq!(
        load.preemptions, 0,
        "the cache must give way before any preemption"
    );
    // The first request's blocks were evicted for the room; what is cached now is the
    // second one's prompt, cached when it finished.
    let big_blocks = big.prompt.len() / BLOCK_SIZE;
    assert_eq!(load.prefix.cached_blocks, big_blocks, "{load:?}");
    Ok(())
}
