//! The continuous batching loop on the real default model (CPU).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CONFIG, collect, engine, load_model, request};
use inferpool_agent::engine::kv::{BLOCK_SIZE, BlockBudget};
use inferpool_agent::engine::model::Llama;
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::generation::{FinishReason, GenerationEvent, GenerationRequest, Priority};
use inferpool_agent::scheduler::batcher::{BatcherConfig, Load, SubmitError};
use inferpool_agent::scheduler::handle::EngineHandle;
use inferpool_agent::scheduler::strategy::Strategy;

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
async fn a_client_that_reads_nothing_holds_up_only_itself_and_still_gets_its_end()
-> anyhow::Result<()> {
    let (engine, tok) = engine(CONFIG)?;
    // Far more tokens than a client may leave unread: with a send that waits on the
    // client, the whole loop would stop at the slow one's 65th token. No stop tokens, so
    // that both run to their limit whatever the kernels make of the prompts.
    let endless = |prompt| -> anyhow::Result<GenerationRequest> {
        let mut r = request(&tok, prompt, 120)?;
        r.stop_tokens.clear();
        Ok(r)
    };
    let mut slow = engine
        .generate(endless("Count from one to one hundred.")?)
        .await?;
    let fast = engine
        .generate(endless("Count from one to fifty.")?)
        .await?;
    let (tokens, end) = tokio::time::timeout(Duration::from_secs(300), collect(fast)).await?;
    assert!(
        matches!(end, Some(GenerationEvent::Finished { .. })),
        "{end:?}"
    );
    assert_eq!(tokens.len(), 120, "the other stream stopped early");
    // The slow one is still in the batch, paused, and gets everything once it reads.
    let mut load = engine.load();
    tokio::time::timeout(Duration::from_secs(30), load.wait_for(|l| l.running == 1)).await??;
    let mut streamed = 0;
    let end = loop {
        match slow.recv().await {
            Some(GenerationEvent::Token(_)) => streamed += 1,
            other => break other,
        }
    };
    let Some(GenerationEvent::Finished {
        completion_tokens, ..
    }) = end
    else {
        panic!("the slow client lost its end: {end:?}");
    };
    assert_eq!((streamed, completion_tokens), (120, 120));
    Ok(())
}

#[tokio::test]
async fn under_load_critical_goes_first_and_low_last() -> anyhow::Result<()> {
    // Strict priority: with aging, a wait longer than its period on a slow machine would
    // let normal catch up with critical (aging has its own tests on plain instants).
    let (engine, tok) = engine(BatcherConfig {
        max_batch_size: 1,
        aging: Duration::ZERO,
        ..CONFIG
    })?;
    let mut load = engine.load();
    // Runs to its limit (no stop token) while the others queue behind it.
    let mut story = request(&tok, "Tell a story.", 32)?;
    story.stop_tokens.clear();
    let running = engine.generate(story).await?;
    load.wait_for(|l| l.running == 1).await?;
    let mut order = Vec::new();
    for priority in [Priority::Low, Priority::Normal, Priority::Critical] {
        let mut r = request(&tok, "Say hi.", 2)?;
        r.priority = priority;
        order.push((priority, engine.generate(r).await?));
    }
    // With one slot they run one after another, in the order they finish.
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = order
        .into_iter()
        .map(|(priority, events)| {
            let finished = Arc::clone(&finished);
            tokio::spawn(async move {
                let (_, end) = collect(events).await;
                if let Ok(mut finished) = finished.lock() {
                    finished.push(priority);
                }
                end
            })
        })
        .collect();
    collect(running).await;
    for task in tasks {
        assert!(matches!(
            task.await?,
            Some(GenerationEvent::Finished { .. })
        ));
    }
    let finished = finished.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(
        finished,
        [Priority::Critical, Priority::Normal, Priority::Low]
    );
    Ok(())
}

#[tokio::test]
async fn a_request_that_could_never_fit_the_kv_cache_is_refused_at_once() -> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        kv_blocks: 4,
        ..CONFIG
    })?;
    let fits = request(&tok, "Hi.", 64 - 20)?;
    assert!(fits.prompt.len() <= 20);
    let too_long = request(&tok, "Hi.", 64)?;
    let refused = engine.generate(too_long.clone()).await.unwrap_err();
    assert_eq!(
        refused,
        SubmitError::TooLarge {
            tokens: too_long.prompt.len() + 64,
            capacity: 64
        }
    );
    let (_, end) = collect(engine.generate(fits).await?).await;
    assert!(matches!(end, Some(GenerationEvent::Finished { .. })));
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

/// Both sequences of a pair are admitted at the same step: the dynamic gate holds the first
/// (for an hour) until the second fills the batch, and one step prefills both prompts whole.
/// From there the schedule depends only on token counts, never on timing.
fn pair_config(kv_blocks: usize) -> BatcherConfig {
    BatcherConfig {
        max_batch_size: 2,
        max_batch_tokens: 256,
        kv_blocks,
        strategy: Strategy::Dynamic,
        max_wait: Duration::from_secs(3600),
        ..CONFIG
    }
}

/// What one request streamed: its tokens and how it ended.
struct Streamed {
    tokens: Vec<u32>,
    end: Option<GenerationEvent>,
}

impl Streamed {
    /// Whether it finished and counted exactly the tokens it streamed (a stop token ends
    /// the sequence without being streamed, but counts).
    fn complete(&self) -> bool {
        match self.end {
            Some(GenerationEvent::Finished {
                reason,
                completion_tokens,
                ..
            }) => {
                completion_tokens == self.tokens.len() + usize::from(reason == FinishReason::Stop)
            }
            _ => false,
        }
    }
}

/// Runs `a` and `b` together on a fresh engine; returns what each streamed and the load
/// once every block came back.
async fn run_pair(
    model: &Arc<Llama>,
    config: BatcherConfig,
    a: &GenerationRequest,
    b: &GenerationRequest,
) -> anyhow::Result<(Streamed, Streamed, Load)> {
    let engine = EngineHandle::start(Arc::clone(model), config);
    let (ra, rb) = (
        engine.generate(a.clone()).await?,
        engine.generate(b.clone()).await?,
    );
    let ((ta, ea), (tb, eb)) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(collect(ra), collect(rb))
    })
    .await?;
    let mut load = engine.load();
    let load = *tokio::time::timeout(
        Duration::from_secs(30),
        load.wait_for(|l| l.kv_blocks_used == 0 && l.running == 0),
    )
    .await??;
    let streamed = |tokens, end| Streamed { tokens, end };
    Ok((streamed(ta, ea), streamed(tb, eb), load))
}

/// Tokens a sequence of `len` cached tokens can still add before it needs another block.
fn slack(len: usize) -> usize {
    BlockBudget::blocks_for(len) * BLOCK_SIZE - len
}

#[tokio::test]
async fn running_out_of_blocks_preempts_and_every_sequence_still_completes() -> anyhow::Result<()> {
    let (model, tok) = load_model()?;
    let a = request(&tok, "Write a short poem about the sea and the wind.", 32)?;
    let b = request(&tok, "Explain briefly why the sky looks blue.", 32)?;
    let (la, lb) = (a.prompt.len(), b.prompt.len());
    // The budget holds the two prompts and nothing more. After the shared prefill step
    // (one token each), each sequence decodes into its last block's slack; the first to
    // need a block preempts b (the newer), so b has streamed exactly this many tokens.
    let tight = BlockBudget::blocks_for(la) + BlockBudget::blocks_for(lb);
    let before_preemption = slack(la).min(slack(lb)) + 1;
    assert!(la + lb <= 256, "both prompts must prefill in one step");
    assert!(
        BlockBudget::blocks_for(la.max(lb) + a.max_tokens) <= tight,
        "each sequence must fit the budget alone"
    );

    let (ref_a, ref_b, ref_load) = run_pair(&model, pair_config(256), &a, &b).await?;
    assert_eq!(
        ref_load.preemptions, 0,
        "the reference run had room for both"
    );
    assert!(
        ref_b.tokens.len() > before_preemption,
        "b must still be generating when the budget runs out: {:?}",
        ref_b.tokens
    );
    let (run_a, run_b, load) = run_pair(&model, pair_config(tight), &a, &b).await?;
    assert!(
        load.preemptions > 0,
        "the budget was never exhausted: {load:?}"
    );
    assert!(
        run_a.complete() && run_b.complete(),
        "both sequences finish"
    );
    // a was never preempted: it decodes exactly as with room for both (rows of a batch are
    // computed independently of each other).
    assert_eq!(run_a.tokens, ref_a.tokens, "preempting b changed a");
    // Up to the preemption both runs took the same steps, so b streamed the same tokens...
    assert_eq!(
        run_b.tokens[..before_preemption],
        ref_b.tokens[..before_preemption],
        "b's tokens before the preemption"
    );
    // ...and then it resumed alone from its prompt and everything it had streamed, one
    // prefill and then decoding, exactly as a fresh request with that prompt runs alone.
    // (Its continuation may differ from the reference's: a prefill sums in another order
    // than decoding did, and a near-tie can flip.)
    let mut resumed = b.clone();
    resumed
        .prompt
        .extend_from_slice(&run_b.tokens[..before_preemption]);
    resumed.max_tokens -= before_preemption;
    let solo = BatcherConfig {
        max_batch_tokens: 256,
        ..CONFIG
    };
    let engine = EngineHandle::start(Arc::clone(&model), solo);
    let (alone, _) = collect(engine.generate(resumed).await?).await;
    assert_eq!(
        run_b.tokens[before_preemption..],
        alone,
        "b resumed from what it had streamed"
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
