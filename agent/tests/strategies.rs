//! Each batching strategy on the real default model, in a test that reaches a state only
//! that strategy allows: under any other the awaited state never comes and the test fails.

mod common;

use std::time::Duration;

use common::{CONFIG, collect, engine, request};
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::generation::{GenerationEvent, GenerationRequest};
use inferpool_agent::scheduler::adaptive::SloTargets;
use inferpool_agent::scheduler::batcher::{BatcherConfig, Load};
use inferpool_agent::scheduler::handle::EngineHandle;
use inferpool_agent::scheduler::strategy::Strategy;
use tokio::sync::mpsc::Receiver;

/// A request that runs exactly `tokens` steps (no stop token).
fn exactly(tok: &ModelTokenizer, tokens: usize) -> anyhow::Result<GenerationRequest> {
    let mut r = request(tok, "Count slowly from one to one thousand.", tokens)?;
    r.stop_tokens.clear();
    Ok(r)
}

/// Waits (at most a minute) for a load `what` describes.
async fn reach(
    engine: &EngineHandle,
    what: &str,
    ok: impl Fn(&Load) -> bool,
) -> anyhow::Result<()> {
    let mut load = engine.load();
    let wait = load.wait_for(|l| ok(l));
    let reached = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .is_ok();
    anyhow::ensure!(
        reached,
        "never reached: {what}; last {:?}",
        *engine.load().borrow()
    );
    Ok(())
}

async fn finished(events: Receiver<GenerationEvent>) -> bool {
    matches!(
        collect(events).await.1,
        Some(GenerationEvent::Finished { .. })
    )
}

fn held(strategy: Strategy, max_batch_size: usize) -> BatcherConfig {
    BatcherConfig {
        max_batch_size,
        max_batch_tokens: 256,
        strategy,
        // Never reached: only a full batch (or free slots filled) opens the gate.
        max_wait: Duration::from_secs(3600),
        ..CONFIG
    }
}

#[tokio::test]
async fn static_starts_a_new_batch_only_after_the_last_one_finished() -> anyhow::Result<()> {
    let (engine, tok) = engine(held(Strategy::Static, 2))?;
    let short = engine.generate(exactly(&tok, 2)?).await?;
    let long = engine.generate(exactly(&tok, 300)?).await?;
    reach(&engine, "the first batch running", |l| l.running == 2).await?;
    assert!(finished(short).await);
    // A slot is free, and two requests wait for it: static keeps them out of the running
    // batch (continuous, dynamic and adaptive admit one at once).
    let c = engine.generate(exactly(&tok, 2)?).await?;
    let d = engine.generate(exactly(&tok, 2)?).await?;
    reach(&engine, "two held beside one running", |l| {
        l.running == 1 && l.queued[2] == 2
    })
    .await?;
    assert!(finished(long).await);
    // The batch is over and the next one is full: both start together.
    let (c, d) = tokio::join!(finished(c), finished(d));
    assert!(c && d);
    Ok(())
}

#[tokio::test]
async fn dynamic_holds_until_the_free_slots_fill_and_then_joins_the_running_batch()
-> anyhow::Result<()> {
    let (engine, tok) = engine(held(Strategy::Dynamic, 3))?;
    let short = engine.generate(exactly(&tok, 2)?).await?;
    let b = engine.generate(exactly(&tok, 300)?).await?;
    // Two wait for three free slots (continuous would have started the first at once).
    reach(&engine, "two held on an idle engine", |l| {
        l.running == 0 && l.queued[2] == 2
    })
    .await?;
    let c = engine.generate(exactly(&tok, 300)?).await?;
    reach(&engine, "all three admitted together", |l| l.running == 3).await?;
    assert!(finished(short).await);
    // One slot free, one request: it fills the free slots, so it joins the running batch
    // (static would hold it until b and c finished).
    let d = engine.generate(exactly(&tok, 2)?).await?;
    reach(&engine, "the newcomer running beside the batch", |l| {
        l.running == 3 && l.waiting() == 0
    })
    .await?;
    let (b, c, d) = tokio::join!(finished(b), finished(c), finished(d));
    assert!(b && c && d);
    Ok(())
}

#[tokio::test]
async fn adaptive_admits_fewer_sequences_when_steps_miss_the_time_per_token_target()
-> anyhow::Result<()> {
    // The controller's convergence is tested on a modelled machine (scheduler/adaptive.rs,
    // plain values); here the real engine feeds it real step times. A target no step can
    // meet (1 ms) must bring the admitted batch down to one sequence, which continuous
    // batching at full size never does; timing noise cannot make a step that fast.
    const FULL: usize = 8;
    let config = BatcherConfig {
        max_batch_size: FULL,
        max_batch_tokens: 1024,
        queue_limits: [64; 4],
        strategy: Strategy::Adaptive,
        max_wait: Duration::ZERO,
        slo: SloTargets {
            time_per_token: Some(Duration::from_millis(1)),
            ttft: None,
        },
        ..CONFIG
    };
    let (engine, tok) = engine(config)?;
    let mut streams = Vec::new();
    for _ in 0..3 * FULL {
        streams.push(engine.generate(exactly(&tok, 12)?).await?);
    }
    reach(&engine, "a full first batch", |l| l.running == FULL).await?;
    reach(&engine, "the limit down to one", |l| l.batch_limit == 1).await?;
    // Running sequences are never cut; once they are done, one runs at a time.
    reach(&engine, "one running, the rest held", |l| {
        l.running == 1 && l.waiting() > 0
    })
    .await?;
    let done = futures::future::join_all(streams.into_iter().map(finished)).await;
    assert!(done.into_iter().all(|f| f), "every stream finishes");
    let load = *engine.load().borrow();
    assert!(
        load.time_per_token > Some(Duration::from_millis(1)),
        "{load:?}"
    );
    Ok(())
}
