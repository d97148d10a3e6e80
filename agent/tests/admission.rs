//! Admission on the real default model: a queued request whose deadline passes leaves the
//! queue with `Expired` and never runs, while the batch goes on.

mod common;

use std::time::{Duration, Instant};

use common::{CONFIG, collect, engine, request};
use inferpool_agent::generation::GenerationEvent;
use inferpool_agent::scheduler::batcher::BatcherConfig;

#[tokio::test]
async fn a_request_whose_deadline_passes_in_the_queue_leaves_it_without_running()
-> anyhow::Result<()> {
    let (engine, tok) = engine(BatcherConfig {
        max_batch_size: 1,
        ..CONFIG
    })?;
    let mut load = engine.load();
    // Fills the only slot for far longer than the deadline below (hundreds of steps).
    let mut long = request(&tok, "Count from one to one thousand.", 400)?;
    long.stop_tokens.clear();
    let mut running = engine.generate(long).await?;
    assert!(matches!(
        running.recv().await,
        Some(GenerationEvent::Token(_))
    ));
    let mut late = request(&tok, "Say hi.", 4)?;
    late.deadline = Some(Instant::now() + Duration::from_millis(300));
    let (tokens, end) = tokio::time::timeout(
        Duration::from_secs(30),
        collect(engine.generate(late).await?),
    )
    .await?;
    assert_eq!(end, Some(GenerationEvent::Expired));
    assert!(tokens.is_empty(), "an expired request must never run");
    // It left the queue while the long request kept its slot.
    let left = load.wait_for(|l| l.waiting() == 0);
    let now = *tokio::time::timeout(Duration::from_secs(30), left).await??;
    assert_eq!(now.running, 1, "{now:?}");
    // The running request was not disturbed: it still streams to its end.
    drop(running.recv().await);
    let (rest, end) = collect(running).await;
    assert!(matches!(end, Some(GenerationEvent::Finished { .. })));
    assert!(rest.len() > 300, "{}", rest.len());
    Ok(())
}

#[tokio::test]
async fn a_request_with_time_left_runs() -> anyhow::Result<()> {
    let (engine, tok) = engine(CONFIG)?;
    let mut r = request(&tok, "Say hi.", 4)?;
    r.deadline = Some(Instant::now() + Duration::from_secs(600));
    let (tokens, end) = collect(engine.generate(r).await?).await;
    assert!(matches!(end, Some(GenerationEvent::Finished { .. })) && !tokens.is_empty());
    Ok(())
}
