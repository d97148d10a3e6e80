//! Retrying and failing over between agents, through the gateway's own dispatch, load
//! subscriptions and agent channels, against stand-in agents: tonic servers on
//! loopback, each on its own runtime and thread, so that one can die as a process dies
//! (its runtime shut down: every socket closed at once).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use inferpool_protocol::agent::agent_server::{Agent, AgentServer};
use inferpool_protocol::agent::{
    DrainRequest, DrainResponse, EmbedRequest, EmbedResponse, ErrorInfo, FinishReason,
    GenerateRequest, GenerateResponse, LoadReport, WatchLoadRequest,
};
use prost::Message as _;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use super::pool::Pool;
use super::stream::testing::round_robin_pool;
use super::stream::{Forwarded, forward};
use super::tries::wait_for_agent;
use crate::gateway::core::pick::{RequestKey, RoundRobin};
use crate::gateway::core::policy::{ForwardError, ForwardSettings};
use crate::gateway::core::retry::RetryBudget;
use crate::gateway::core::view::{Endpoint, PoolSettings, PoolView};
use crate::gateway::upstream::channel::UpstreamSettings;

/// What a stand-in agent does with `Generate`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Behaviour {
    /// Refuses with a typed server error, as an agent whose engine failed.
    Fail,
    /// Answers one message that finishes.
    Answer,
    /// Accepts and sends nothing (a request queued behind a full batch).
    Hold,
}

/// Counts a stand-in's calls and its streams still open.
#[derive(Debug, Default)]
struct Counts {
    calls: AtomicU32,
    open: AtomicU32,
}

/// One open stream; dropped when the gateway's side of it goes away.
struct Open(Arc<Counts>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
struct StandIn {
    behaviour: Behaviour,
    counts: Arc<Counts>,
}

type Answers = Pin<Box<dyn Stream<Item = Result<GenerateResponse, Status>> + Send>>;
type Reports = Pin<Box<dyn Stream<Item = Result<LoadReport, Status>> + Send>>;

fn answer() -> GenerateResponse {
    GenerateResponse {
        text: "hi".into(),
        finish: Some(FinishReason::Stop.into()),
        ..GenerateResponse::default()
    }
}

#[tonic::async_trait]
impl Agent for StandIn {
    type GenerateStream = Answers;
    type WatchLoadStream = Reports;

    async fn generate(&self, _: Request<GenerateRequest>) -> Result<Response<Answers>, Status> {
        self.counts.calls.fetch_add(1, Ordering::SeqCst);
        let answers: Answers = match self.behaviour {
            Behaviour::Fail => {
                let info = ErrorInfo {
                    r#type: "server_error".into(),
                    message: "engine error".into(),
                };
                let details = info.encode_to_vec().into();
                return Err(Status::with_details(Code::Internal, "engine", details));
            }
            Behaviour::Answer => Box::pin(futures::stream::iter([Ok(answer())])),
            Behaviour::Hold => {
                self.counts.open.fetch_add(1, Ordering::SeqCst);
                let open = Open(self.counts.clone());
                Box::pin(futures::stream::once(async move {
                    let _open = open;
                    std::future::pending::<Result<GenerateResponse, Status>>().await
                }))
            }
        };
        Ok(Response::new(answers))
    }

    /// One report of an idle, ready agent, then the stream stays open.
    async fn watch_load(&self, _: Request<WatchLoadRequest>) -> Result<Response<Reports>, Status> {
        let report = LoadReport {
            max_batch_size: 64,
            kv_blocks_total: 100,
            ..LoadReport::default()
        };
        let reports = futures::stream::iter([Ok(report)]).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(reports)))
    }

    async fn embed(&self, _: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        Err(Status::unimplemented("embed"))
    }

    async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        Err(Status::unimplemented("drain"))
    }
}

/// A running stand-in agent; dies (all its connections closed) when dropped.
pub(super) struct Running {
    pub(super) addr: SocketAddr,
    counts: Arc<Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Running {
    pub(super) fn start(behaviour: Behaviour) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let agent = StandIn {
            behaviour,
            counts: counts.clone(),
        };
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming = futures::stream::unfold(listener, |l| async move {
                let accepted = l.accept().await.map(|(socket, _)| socket);
                Some((accepted, l))
            });
            tonic::transport::Server::builder()
                .add_service(AgentServer::new(agent))
                .serve_with_incoming(incoming)
                .await
        });
        Self {
            addr,
            counts,
            runtime: Some(runtime),
        }
    }

    fn calls(&self) -> u32 {
        self.counts.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A round-robin pool of `agents` (`a0`, `a1`, ...) subscribed to their load reports, once
/// every one has reported; its breakers open after `threshold` failures.
async fn pool_of(agents: &[&Running], threshold: u32) -> Arc<Pool> {
    let settings = PoolSettings {
        failure_threshold: threshold,
        cooldown: Duration::from_secs(60),
        stale_after: Duration::from_secs(60),
    };
    let pool = Pool::new(
        "m".into(),
        PoolView::new(Box::new(RoundRobin::default()), settings),
        UpstreamSettings::default(),
    );
    let endpoints: Vec<Endpoint> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| Endpoint {
            id: format!("a{i}"),
            grpc: a.addr,
            http: a.addr,
        })
        .collect();
    pool.set_endpoints(&endpoints);
    until(|| healthy(&pool).len() == agents.len()).await;
    pool
}

pub(super) fn healthy(pool: &Pool) -> Vec<String> {
    pool.with_view(|v| v.healthy_ids()).unwrap_or_default()
}

/// The gateway's requests in flight on every agent of `pool`.
pub(super) fn in_flight(pool: &Pool) -> u32 {
    let agents = pool.with_view(|v| v.snapshot()).unwrap_or_default();
    agents.iter().map(|a| a.1).sum()
}

/// Waits (10 s at most) until `done` holds.
pub(super) async fn until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) const SETTINGS: ForwardSettings = ForwardSettings {
    max_retries: 2,
    queue_wait: Duration::from_millis(200),
};

pub(super) fn request() -> GenerateRequest {
    GenerateRequest {
        model: "m".into(),
        ..GenerateRequest::default()
    }
}

async fn send(pool: &Arc<Pool>, budget: &RetryBudget) -> Result<Forwarded, ForwardError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let request = request();
    forward(
        pool,
        budget,
        SETTINGS,
        &request,
        &RequestKey::default(),
        deadline,
    )
    .await
}

/// A budget with nothing saved and nothing earned by traffic.
fn spent_budget() -> RetryBudget {
    let budget = RetryBudget::new(0);
    while budget.try_withdraw() {}
    budget
}

#[tokio::test]
async fn when_every_agent_fails_retries_stay_bounded_and_requests_fail_fast() {
    let agents = [
        Running::start(Behaviour::Fail),
        Running::start(Behaviour::Fail),
    ];
    let calls = || agents.iter().map(Running::calls).sum::<u32>();
    // Breakers out of the way: the request's own bound, then the pool's budget.
    let pool = pool_of(&[&agents[0], &agents[1]], 1000).await;
    let budget = RetryBudget::new(100);
    let started = Instant::now();
    let failed = send(&pool, &budget).await.unwrap_err();
    assert_eq!(failed, ForwardError::Unavailable);
    assert_eq!(calls(), 2, "once on each agent, never twice on one");
    assert!(
        started.elapsed() < SETTINGS.queue_wait,
        "failing everywhere is known at once, not after a wait"
    );
    let budget = spent_budget();
    let spent = Instant::now();
    for _ in 0..10 {
        assert!(send(&pool, &budget).await.is_err());
    }
    // Ten retries a second accrue whatever the traffic (see `retry`), no more.
    let floor = u32::try_from(spent.elapsed().as_millis() / 100).unwrap_or(u32::MAX);
    let retried = calls() - 2 - 10;
    assert!(retried <= floor, "{retried} retries with the budget spent");
    // With breakers, failing agents are soon left alone altogether.
    let pool = pool_of(&[&agents[0], &agents[1]], 3).await;
    let before = calls();
    for _ in 0..10 {
        assert!(send(&pool, &RetryBudget::new(100)).await.is_err());
    }
    assert_eq!(
        calls() - before,
        6,
        "three failures each opened both circuits"
    );
    assert!(healthy(&pool).is_empty());
    assert_eq!(in_flight(&pool), 0, "every slot came back");
}

#[tokio::test]
async fn an_agent_dying_with_requests_queued_loses_none_whatever_the_budget() {
    let holding = Running::start(Behaviour::Hold);
    let answering = Running::start(Behaviour::Answer);
    let pool = pool_of(&[&holding, &answering], 3).await;
    let budget = Arc::new(spent_budget());
    // Round robin parks every other request on the agent that holds them.
    let requests: Vec<_> = (0..40)
        .map(|_| {
            let (pool, budget) = (pool.clone(), budget.clone());
            tokio::spawn(async move { send(&pool, &budget).await.map(|f| f.retries) })
        })
        .collect();
    until(|| holding.counts.open.load(Ordering::SeqCst) == 20).await;
    drop(holding);
    let mut moved = 0;
    for request in requests {
        let retries = request.await.unwrap().expect("no request is lost");
        moved += retries;
    }
    assert_eq!(
        moved, 20,
        "the twenty held ones moved, without retry budget"
    );
    assert_eq!(healthy(&pool), ["a1"], "the dead agent is out");
    assert_eq!(in_flight(&pool), 0);
}

#[tokio::test]
async fn a_request_dropped_before_its_first_token_gives_its_slot_back() {
    let holding = Running::start(Behaviour::Hold);
    let pool = pool_of(&[&holding], 3).await;
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { send(&pool, &RetryBudget::new(20)).await.map(|_| ()) })
    };
    until(|| holding.counts.open.load(Ordering::SeqCst) == 1).await;
    assert_eq!(in_flight(&pool), 1);
    // The client leaves: its request is dropped, which cancels it at the agent too.
    waiting.abort();
    until(|| in_flight(&pool) == 0).await;
    until(|| holding.counts.open.load(Ordering::SeqCst) == 0).await;
    let states = pool.with_view(|v| v.snapshot()).unwrap_or_default();
    assert_eq!(
        states[0].2, "closed",
        "a client leaving is no failure of the agent"
    );
}

#[tokio::test]
async fn a_saturated_pool_serves_waiting_requests_most_urgent_first() {
    let pool = round_robin_pool(&[SocketAddr::from(([127, 0, 0, 1], 9))], 1);
    let key = RequestKey::default();
    // Two requests in flight saturate an agent with one slot.
    let mut held: Vec<_> = (0..2).map(|_| pool.pick(&key, &[]).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let low = {
        let pool = pool.clone();
        tokio::spawn(async move {
            wait_for_agent(&pool, &RequestKey::default(), 3, &[], deadline).await
        })
    };
    until(|| pool.more_urgent_waiting(4)).await;
    let critical = {
        let pool = pool.clone();
        tokio::spawn(async move {
            wait_for_agent(&pool, &RequestKey::default(), 0, &[], deadline).await
        })
    };
    until(|| pool.more_urgent_waiting(1)).await;
    held.pop();
    let critical = critical.await.unwrap();
    assert!(critical.is_ok(), "the critical request got the free slot");
    assert!(!low.is_finished(), "the low one still waits");
    held.pop();
    let low = low.await.unwrap();
    assert!(low.is_ok());
    let expired = wait_for_agent(&pool, &key, 2, &[], Instant::now()).await;
    assert_eq!(
        expired.map(|_| ()),
        Err(ForwardError::Saturated),
        "then 429 at the deadline"
    );
    drop((critical, low));
    assert_eq!(in_flight(&pool), 0, "every slot came back");
}
