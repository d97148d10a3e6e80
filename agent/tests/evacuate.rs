//! The engine loop's stops with the real model: an evacuation hands back every request
//! that has streamed nothing and ends the others with an error; a loop whose handles are
//! all gone finishes its queue whatever its strategy's gate says; a full queue gives the
//! request back.

mod common;

use std::time::Duration;

use common::{CONFIG, collect, load_model, request};
use inferpool_agent::generation::GenerationEvent;
use inferpool_agent::scheduler::batcher::{BatcherConfig, SubmitError};
use inferpool_agent::scheduler::faults::StepFaults;
use inferpool_agent::scheduler::handle::{EngineHandle, Unstarted};
use inferpool_agent::scheduler::strategy::Strategy;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_evacuation_hands_back_what_has_not_started_and_ends_the_rest() -> anyhow::Result<()> {
    let (model, tok) = load_model()?;
    let config = BatcherConfig {
        max_batch_size: 1,
        ..CONFIG
    };
    let (engine, exit) = EngineHandle::supervised(model, config, StepFaults::default());
    let mut running = engine
        .generate(request(&tok, "Count to one hundred.", 200)?)
        .await?;
    assert!(matches!(
        running.recv().await,
        Some(GenerationEvent::Token(_))
    ));
    let mut queued = Vec::new();
    for i in 0..3 {
        queued.push(
            engine
                .generate(request(&tok, &format!("Say {i}."), 4)?)
                .await?,
        );
    }
    engine.evacuate("test".to_owned()).await;
    let exit = tokio::time::timeout(LIMIT, exit).await??;
    assert_eq!(exit.reason, "test");
    // The three queued requests come back with their clients' channels, untouched.
    assert_eq!(exit.unstarted.len(), 3);
    for r in &mut queued {
        assert!(
            r.try_recv().is_err(),
            "a queued request streamed on the failed engine"
        );
    }
    // The running one ends with an explicit error after what it streamed.
    let (_, end) = collect(running).await;
    assert!(
        matches!(&end, Some(GenerationEvent::Failed(m)) if m.contains("test")),
        "{end:?}"
    );
    // The stopped engine refuses new work and gives it back.
    let (work, _rx) = Unstarted::new(request(&tok, "Hi.", 2)?);
    let refused = engine
        .submit(work)
        .await
        .expect_err("a stopped engine refuses");
    assert_eq!(refused.error, SubmitError::Stopped);
    assert!(refused.work.is_some());
    Ok(())
}

#[tokio::test]
async fn a_loop_without_handles_finishes_its_queue_through_a_closed_gate() -> anyhow::Result<()> {
    let (model, tok) = load_model()?;
    // A static batch waits a minute for four requests; two come, then every handle goes.
    let config = BatcherConfig {
        strategy: Strategy::Static,
        max_wait: Duration::from_secs(60),
        ..CONFIG
    };
    let (engine, exit) = EngineHandle::supervised(model, config, StepFaults::default());
    let first = engine.generate(request(&tok, "Say hi.", 3)?).await?;
    let second = engine.generate(request(&tok, "Say yes.", 3)?).await?;
    drop(engine);
    for rx in [first, second] {
        let (tokens, end) = tokio::time::timeout(LIMIT, collect(rx)).await?;
        assert!(!tokens.is_empty());
        assert!(
            matches!(end, Some(GenerationEvent::Finished { .. })),
            "{end:?}"
        );
    }
    // It ended on its own, without a fault to report.
    assert!(tokio::time::timeout(LIMIT, exit).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn a_full_queue_gives_the_request_back() -> anyhow::Result<()> {
    let (model, tok) = load_model()?;
    let config = BatcherConfig {
        max_batch_size: 1,
        queue_limits: [1; 4],
        ..CONFIG
    };
    let (engine, _exit) = EngineHandle::supervised(model, config, StepFaults::default());
    let mut running = engine
        .generate(request(&tok, "Count to one hundred.", 100)?)
        .await?;
    assert!(matches!(
        running.recv().await,
        Some(GenerationEvent::Token(_))
    ));
    let _queued = engine.generate(request(&tok, "Say hi.", 2)?).await?;
    let (work, _rx) = Unstarted::new(request(&tok, "Say no.", 2)?);
    let refused = engine.submit(work).await.expect_err("the queue is full");
    assert!(matches!(refused.error, SubmitError::QueueFull(_)));
    assert!(refused.work.is_some(), "the request is lost");
    Ok(())
}
