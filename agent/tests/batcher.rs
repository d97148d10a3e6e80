//! The continuous batching loop on the real default model (CPU).

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::model::{Llama, WeightFormat};
use inferpool_agent::engine::sampling::SamplingParams;
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::scheduler::batcher::{
    BatcherConfig, EngineHandle, FinishReason, GenerationEvent, GenerationRequest, SubmitError,
};
use inferpool_agent::scheduler::queue::Priority;
use inferpool_agent::scheduler::strategy::Strategy;
use inferpool_e2e::parts::default_model;

fn engine(config: BatcherConfig) -> anyhow::Result<(EngineHandle, ModelTokenizer)> {
    let path = default_model()?;
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&path)?)?;
    let model = Arc::new(Llama::load(&path, WeightFormat::Q8, &Device::Cpu)?);
    Ok((EngineHandle::start(model, config), tok))
}

fn request(
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
    })
}

async fn collect(
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

const CONFIG: BatcherConfig = BatcherConfig {
    max_batch_size: 4,
    max_batch_tokens: 16,
    queue_limits: [8; 4],
    kv_blocks: 256,
    strategy: Strategy::Continuous,
    max_wait: Duration::ZERO,
};

#[tokio::test]
async fn concurrent_requests_decode_as_they_would_alone() -> anyhow::Result<()> {
    let (engine, tok) = engine(CONFIG)?;
    let a = request(&tok, "Write one sentence about the sea.", 10)?;
    let b = request(&tok, "Name three colours.", 10)?;
    let (alone, _) = collect(engine.generate(a.clone()).await?).await;
    // Both at once: prompts longer than the 16-token budget are prefilled in chunks while
    // the other sequence decodes.
    let (ra, rb) = (engine.generate(a).await?, engine.generate(b).await?);
    let ((ta, ea), (tb, eb)) = tokio::join!(collect(ra), collect(rb));
    assert_eq!(ta, alone, "batching changed a greedy continuation");
    assert_eq!(ta.len(), 10);
    let finished = |e: Option<GenerationEvent>| matches!(e, Some(GenerationEvent::Finished { .. }));
    assert!(finished(ea.clone()) && finished(eb));
    assert!(matches!(
        ea,
        Some(GenerationEvent::Finished {
            reason: FinishReason::Length,
            completion_tokens: 10,
            ..
        })
    ));
    assert!(!tb.is_empty());
    assert!(tok.decode(&ta, true)?.chars().any(char::is_alphabetic));
    Ok(())
}

#[tokio::test]
async fn a_dropped_receiver_cancels_and_frees_its_slot() -> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        max_batch_size: 1,
        ..CONFIG
    })?;
    let mut rx = engine
        .generate(request(&tok, "Count from one to one hundred.", 400)?)
        .await?;
    assert!(matches!(rx.recv().await, Some(GenerationEvent::Token(_))));
    drop(rx);
    let mut load = engine.load();
    tokio::time::timeout(
        Duration::from_secs(30),
        load.wait_for(|l| l.running == 0 && l.kv_blocks_used == 0),
    )
    .await??;
    // The single slot is free again: a new request runs to its end.
    let (tokens, end) = collect(engine.generate(request(&tok, "Say hi.", 3)?).await?).await;
    assert!(!tokens.is_empty() && matches!(end, Some(GenerationEvent::Finished { .. })));
    Ok(())
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() -> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        max_batch_size: 1,
        max_batch_tokens: 16,
        queue_limits: [0, 0, 1, 0],
        ..CONFIG
    })?;
    let running = engine
        .generate(request(&tok, "Tell a long story.", 400)?)
        .await?;
    let mut load = engine.load();
    tokio::time::timeout(Duration::from_secs(30), load.wait_for(|l| l.running == 1)).await??;
    let _queued = engine
        .generate(request(&tok, "Wait your turn.", 5)?)
        .await?;
    let refused = engine
        .generate(request(&tok, "One too many.", 5)?)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SubmitError::QueueFull(q) if q.priority == Priority::Normal && q.limit == 1)
    );
    let mut low = request(&tok, "Low priority.", 5)?;
    low.priority = Priority::Low;
    assert!(matches!(
        engine.generate(low).await,
        Err(SubmitError::QueueFull(_))
    ));
    drop(running);
    Ok(())
}

#[tokio::test]
async fn running_out_of_blocks_preempts_and_every_sequence_still_completes() -> anyhow::Result<()> {
    // Two prompts of ~30 tokens take 2 blocks each; 40 more tokens each need 3 more blocks
    // apiece, but the budget has 7: one must be preempted and recomputed later.
    let (engine, tok) = engine(BatcherConfig {
        kv_blocks: 7,
        ..CONFIG
    })?;
    let a = request(&tok, "Write a short poem about the sea and the wind.", 40)?;
    let b = request(&tok, "Explain briefly why the sky looks blue.", 40)?;
    let (alone_a, _) = collect(engine.generate(a.clone()).await?).await;
    let (alone_b, _) = collect(engine.generate(b.clone()).await?).await;
    let (ra, rb) = (engine.generate(a).await?, engine.generate(b).await?);
    let ((ta, ea), (tb, eb)) = tokio::join!(collect(ra), collect(rb));
    assert_eq!(ta, alone_a, "preemption changed a greedy continuation");
    // The preempted sequence keeps what it had generated (b is preempted after about 18
    // tokens) and completes. After that its greedy continuation may drift: recomputation
    // prefills in one step what decoding computed row by row, so floating-point sums run
    // in another order and a near-tie can flip.
    if let Some(GenerationEvent::Finished { reason, .. }) = &eb {
        let full = *reason != FinishReason::Length || tb.len() == 40;
        assert!(
            full,
            "the preempted sequence ran to its limit: {} tokens",
            tb.len()
        );
    }
    let kept = tb.iter().zip(&alone_b).take_while(|(x, y)| x == y).count();
    assert!(
        kept >= 16,
        "only {kept} tokens kept over preemption: {tb:?} vs {alone_b:?}"
    );
    assert!(matches!(ea, Some(GenerationEvent::Finished { .. })));
    assert!(matches!(eb, Some(GenerationEvent::Finished { .. })));
    let mut load = engine.load();
    let load = *tokio::time::timeout(
        Duration::from_secs(30),
        load.wait_for(|l| l.kv_blocks_used == 0),
    )
    .await??;
    assert!(
        load.preemptions > 0,
        "the budget was never exhausted: {load:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_static_batch_starts_full_and_a_lone_request_starts_at_the_wait_limit()
-> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        max_batch_size: 2,
        strategy: Strategy::Static,
        max_wait: Duration::from_secs(3600),
        ..CONFIG
    })?;
    let mut load = engine.load();
    let first = engine.generate(request(&tok, "Say one word.", 3)?).await?;
    load.wait_for(|l| l.queued[2] == 1).await?;
    // The batch is not full and the wait is an hour: the request is held...
    assert_eq!(load.borrow().running, 0);
    // ...until a second one fills the batch, and both run together.
    let second = engine.generate(request(&tok, "Say two words.", 3)?).await?;
    let ((a, ea), (b, eb)) = tokio::join!(collect(first), collect(second));
    assert!(!a.is_empty() && !b.is_empty());
    assert!(matches!(ea, Some(GenerationEvent::Finished { .. })));
    assert!(matches!(eb, Some(GenerationEvent::Finished { .. })));

    let (engine, tok) = engine_with(Strategy::Dynamic, Duration::from_millis(50))?;
    let (tokens, end) = collect(engine.generate(request(&tok, "Hi.", 3)?).await?).await;
    assert!(!tokens.is_empty() && matches!(end, Some(GenerationEvent::Finished { .. })));
    Ok(())
}

fn engine_with(
    strategy: Strategy,
    max_wait: Duration,
) -> anyhow::Result<(EngineHandle, ModelTokenizer)> {
    engine(BatcherConfig {
        max_batch_size: 4,
        strategy,
        max_wait,
        ..CONFIG
    })
}
