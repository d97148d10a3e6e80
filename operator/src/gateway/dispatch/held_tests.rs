//! Requests for a pool with no ready agent: held until one serves them or their deadline,
//! within the pool's limit, through the gateway's own dispatch (stand-in agents on
//! loopback, see `failover_tests`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::failover_tests::{Behaviour, Running, SETTINGS, in_flight, request, until};
use super::held::Holding;
use super::pool::Pool;
use super::stream::{Forwarded, forward};
use crate::gateway::core::pick::{RequestKey, RoundRobin};
use crate::gateway::core::policy::ForwardError;
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::view::{Endpoint, PoolSettings, PoolView};
use crate::gateway::upstream::channel::UpstreamSettings;

fn empty_pool(max_held: u32, demand: Arc<Notify>) -> Arc<Pool> {
    let settings = PoolSettings {
        failure_threshold: 5,
        cooldown: Duration::from_secs(60),
        stale_after: Duration::from_secs(60),
    };
    Pool::holding(
        "m".into(),
        PoolView::new(Box::new(RoundRobin::default()), settings),
        UpstreamSettings::default(),
        Holding::new(max_held, demand),
    )
}

async fn send_within(pool: &Arc<Pool>, timeout: Duration) -> Result<Forwarded, ForwardError> {
    let request = request();
    let deadline = Instant::now() + timeout;
    let budget = RetryBudget::new(20);
    forward(
        pool,
        &budget,
        SETTINGS,
        &request,
        &RequestKey::default(),
        deadline,
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn with_no_agent_a_request_is_held_until_its_deadline_then_told_to_retry() {
    let pool = empty_pool(8, Arc::default());
    let started = Instant::now();
    let failed = send_within(&pool, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        failed,
        ForwardError::Scaling,
        "retryable, never model_not_found"
    );
    assert_eq!(failed.status(), 503);
    assert_eq!(failed.error_type(), "pool_scaling");
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "held for its own deadline, not the queue's {:?}",
        SETTINGS.queue_wait
    );
    assert_eq!(pool.holding.count(), 0, "its place was given back");
}

#[tokio::test(start_paused = true)]
async fn past_the_limit_of_held_requests_the_answer_comes_at_once() {
    let pool = empty_pool(1, Arc::default());
    let first = tokio::spawn({
        let pool = pool.clone();
        async move { send_within(&pool, Duration::from_secs(60)).await }
    });
    until(|| pool.holding.count() == 1).await;
    let started = Instant::now();
    let second = send_within(&pool, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(second, ForwardError::Scaling);
    assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
    first.abort();
    let _ = first.await;
    assert_eq!(
        pool.holding.count(),
        0,
        "a client that left gives its place back"
    );
}

#[tokio::test]
async fn a_held_request_is_served_by_the_first_agent_that_comes_up() {
    let demand = Arc::new(Notify::new());
    let pool = empty_pool(8, demand.clone());
    let held = tokio::spawn({
        let pool = pool.clone();
        async move { send_within(&pool, Duration::from_secs(30)).await }
    });
    // The scaler learns of the held request, and starts an agent.
    tokio::time::timeout(Duration::from_secs(10), demand.notified())
        .await
        .expect("the hold is announced");
    until(|| pool.holding.count() == 1).await;
    let agent = Running::start(Behaviour::Answer);
    pool.set_endpoints(&[Endpoint {
        id: "a0".into(),
        grpc: agent.addr,
        http: agent.addr,
    }]);
    let forwarded = held.await.unwrap().expect("served once the agent is up");
    assert_eq!(forwarded.value.first.text, "hi");
    assert_eq!(pool.holding.count(), 0);
    drop(forwarded);
    until(|| in_flight(&pool) == 0).await;
}
