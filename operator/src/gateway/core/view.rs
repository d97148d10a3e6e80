//! A pool's view of its agents: where they are, what they last reported, what this
//! gateway has in flight on each, their circuit breakers. It picks an agent for a request
//! (only among agents that are fresh, not draining and whose breaker admits) and learns
//! from each outcome. Plain data behind one lock; no I/O here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::Breaker;
use super::pick::{Candidate, Pick, Reported, RequestKey};

/// An agent as discovery names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Stable id (pod name, or `local-N`).
    pub id: String,
    /// Its gRPC address (load reports, streamed requests).
    pub grpc: SocketAddr,
    /// Its HTTP address (whole answers, see `dispatch::whole`).
    pub http: SocketAddr,
}

/// How a request to an agent ended, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (a client error such as 400 counts: the agent is fine).
    Success,
    /// A server-side failure.
    Failure,
    /// The agent could not be reached, or its connection broke: a failure, and the agent
    /// is out of rotation until it reports again (a dead agent's load stream breaks too,
    /// so it stays out until it is back).
    Lost,
    /// Ended without a verdict on the agent (the client left, or the deadline came).
    Cancelled,
}

/// Settings of a pool's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Consecutive failures that open an agent's circuit.
    pub failure_threshold: u32,
    /// How long an open circuit waits before a probe.
    pub cooldown: Duration,
    /// A report older than this makes an agent unhealthy.
    pub stale_after: Duration,
}

#[derive(Debug)]
struct AgentEntry {
    http: SocketAddr,
    in_flight: u32,
    reported: Reported,
    reported_at: Option<Instant>,
    draining: bool,
    /// It refused a request as full since its last report: taken as saturated until the
    /// next one says otherwise.
    full: bool,
    breaker: Breaker,
}

/// Why an agent turned a request away although it is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Its queue is full.
    Full,
    /// It is draining (or not ready): it takes nothing new.
    Draining,
}

/// Why no agent was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoAgent {
    /// The pool has no agents, or none is healthy.
    #[error("no healthy agent")]
    NoneHealthy,
    /// Every healthy agent is saturated.
    #[error("every agent is saturated")]
    Saturated,
    /// This request already failed on every healthy agent.
    #[error("the request failed on every healthy agent")]
    Exhausted,
}

/// The agents of one pool.
#[derive(Debug)]
pub struct PoolView {
    agents: BTreeMap<String, AgentEntry>,
    picker: Box<dyn Pick>,
    settings: PoolSettings,
}

impl PoolView {
    /// An empty pool picking with `picker`.
    pub fn new(picker: Box<dyn Pick>, settings: PoolSettings) -> Self {
        Self {
            agents: BTreeMap::new(),
            picker,
            settings,
        }
    }

    /// Whether it has any agent.
    pub fn has_agents(&self) -> bool {
        !self.agents.is_empty()
    }

    /// Replaces the set of agents, keeping the state of those that stay.
    pub fn set_endpoints(&mut self, endpoints: &[Endpoint]) {
        self.agents
            .retain(|id, _| endpoints.iter().any(|e| &e.id == id));
        for e in endpoints {
            let settings = self.settings;
            let entry = self
                .agents
                .entry(e.id.clone())
                .or_insert_with(|| AgentEntry {
                    http: e.http,
                    in_flight: 0,
                    reported: Reported::default(),
                    reported_at: None,
                    draining: false,
                    full: false,
                    breaker: Breaker::new(settings.failure_threshold, settings.cooldown),
                });
            entry.http = e.http;
        }
    }

    /// Records an agent's load report.
    pub fn report(&mut self, id: &str, reported: Reported, draining: bool) {
        if let Some(a) = self.agents.get_mut(id) {
            a.reported = reported;
            a.reported_at = Some(Instant::now());
            a.draining = draining;
            a.full = false;
        }
    }

    /// Learns from an agent's refusal what its next report would say (reports lag by up
    /// to their interval): a draining agent gets no more requests, a full one is
    /// saturated, until a report says otherwise.
    pub fn turned_away(&mut self, id: &str, busy: Busy) {
        if let Some(a) = self.agents.get_mut(id) {
            match busy {
                Busy::Full => a.full = true,
                Busy::Draining => a.draining = true,
            }
        }
    }

    /// Marks an agent unreachable until its next report (its stream broke).
    pub fn lost(&mut self, id: &str) {
        if let Some(a) = self.agents.get_mut(id) {
            a.reported_at = None;
        }
    }

    /// An agent's load stream (re)connected: a new process, or the same one reachable
    /// again. Its breaker starts afresh, so that an agent restarted after it died is
    /// readmitted at once and whole, not held out by the failures of its death (which
    /// would leave it one half-open probe at a time when the other agents die next).
    /// An agent that keeps answering errors while its stream stays up keeps its breaker.
    pub fn rejoined(&mut self, id: &str) {
        if let Some(a) = self.agents.get_mut(id) {
            a.breaker.reset();
        }
    }

    /// An agent answered a request (its first message): a half-open probe resolves now,
    /// at its first token rather than at the end of a long stream; a closed breaker waits
    /// for the request's final outcome. The request stays in flight.
    pub fn answered(&mut self, id: &str) {
        if let Some(a) = self.agents.get_mut(id) {
            a.breaker.record_first_answer();
        }
    }

    fn healthy(&self, a: &AgentEntry) -> bool {
        self.healthy_at(a, Instant::now())
    }

    fn healthy_at(&self, a: &AgentEntry, now: Instant) -> bool {
        let fresh = a
            .reported_at
            .is_some_and(|t| now.saturating_duration_since(t) <= self.settings.stale_after);
        fresh && !a.draining && a.breaker.is_available()
    }

    /// Agents that may take traffic now.
    pub fn healthy_ids(&self) -> Vec<String> {
        self.agents
            .iter()
            .filter(|(_, a)| self.healthy(a))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Picks an agent for `key`, not one of `exclude` (agents this request already
    /// failed on), and counts the request in flight there: its id and HTTP address.
    pub fn choose(
        &mut self,
        key: &RequestKey<'_>,
        exclude: &[String],
    ) -> Result<(String, SocketAddr), NoAgent> {
        // One pass: the candidates (eligible and not saturated), and whether any agent was
        // eligible at all (if none, no agent is healthy; if all are saturated, none is free).
        let now = Instant::now();
        let (mut any_healthy, mut any_eligible) = (false, false);
        let candidates: Vec<Candidate<'_>> = self
            .agents
            .iter()
            .filter(|(_, a)| self.healthy_at(a, now))
            .inspect(|_| any_healthy = true)
            .filter(|(id, _)| !exclude.contains(id))
            .inspect(|_| any_eligible = true)
            .filter(|(_, a)| !saturated(a))
            .map(|(id, a)| Candidate {
                id: id.as_str(),
                in_flight: a.in_flight,
                reported: a.reported,
            })
            .collect();
        if !any_eligible {
            return Err(if any_healthy {
                NoAgent::Exhausted
            } else {
                NoAgent::NoneHealthy
            });
        }
        let index = self
            .picker
            .pick(&candidates, key)
            .ok_or(NoAgent::Saturated)?;
        let id = candidates[index].id.to_owned();
        let agent = self.agents.get_mut(&id).ok_or(NoAgent::NoneHealthy)?;
        if !agent.breaker.try_acquire() {
            return Err(NoAgent::NoneHealthy);
        }
        agent.in_flight += 1;
        Ok((id, agent.http))
    }

    /// A request chosen on `id` ended.
    pub fn finished(&mut self, id: &str, outcome: Outcome) {
        if let Some(a) = self.agents.get_mut(id) {
            a.in_flight = a.in_flight.saturating_sub(1);
            match outcome {
                Outcome::Success => a.breaker.record_success(),
                Outcome::Failure => a.breaker.record_failure(),
                Outcome::Lost => {
                    a.breaker.record_failure();
                    a.reported_at = None;
                }
                Outcome::Cancelled => a.breaker.record_cancelled(),
            }
        }
    }

    /// Each agent's devices by health, from its last report.
    pub fn device_counts(&self) -> Vec<(String, super::pick::DeviceCounts)> {
        let agents = self.agents.iter();
        agents
            .map(|(id, a)| (id.clone(), a.reported.devices))
            .collect()
    }

    /// The last report of every agent that has reported (the autoscalers' load, see
    /// `controller::autoscale`, and the pool's gauges).
    pub fn reports(&self) -> Vec<Reported> {
        let reported = self.agents.values().filter(|a| a.reported_at.is_some());
        reported.map(|a| a.reported).collect()
    }

    /// Per agent: id, in flight, breaker state (for metrics and status).
    pub fn snapshot(&self) -> Vec<(String, u32, &'static str, bool)> {
        self.agents
            .iter()
            .map(|(id, a)| {
                (
                    id.clone(),
                    a.in_flight,
                    a.breaker.state_name(),
                    self.healthy(a),
                )
            })
            .collect()
    }
}

/// Whether an agent has as much work as it can hold: a full batch running and as much
/// again waiting, counting what this gateway sent since its last report (or it said it
/// was full since). This gateway's requests in flight are running or queued there once
/// reported, and not yet before: the work is the larger of the two, never their sum (the
/// sum counted a queued request twice, and kept an agent with 2 running and 1 queued of
/// 2 slots from its 4th).
fn saturated(a: &AgentEntry) -> bool {
    if a.full {
        return true;
    }
    let slots = a.reported.max_batch_size.max(1);
    let work = (a.reported.queued + a.reported.running).max(a.in_flight);
    work >= 2 * slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::core::pick::{LeastConnections, RoundRobin};

    const SETTINGS: PoolSettings = PoolSettings {
        failure_threshold: 2,
        cooldown: Duration::from_secs(5),
        stale_after: Duration::from_secs(2),
    };

    fn endpoints(n: u16) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint {
                id: format!("a{i}"),
                grpc: SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                http: SocketAddr::from(([127, 0, 0, 1], 8000 + i)),
            })
            .collect()
    }

    fn idle() -> Reported {
        Reported {
            max_batch_size: 2,
            ..Reported::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_fresh_undrained_agents_are_picked() {
        let mut pool = PoolView::new(Box::new(RoundRobin::default()), SETTINGS);
        pool.set_endpoints(&endpoints(3));
        assert_eq!(
            pool.choose(&RequestKey::default(), &[]),
            Err(NoAgent::NoneHealthy)
        );
        pool.report("a0", idle(), false);
        pool.report("a1", idle(), true);
        pool.report("a2", idle(), false);
        assert_eq!(pool.healthy_ids(), ["a0", "a2"]);
        tokio::time::advance(Duration::from_secs(3)).await;
        pool.report("a2", idle(), false);
        assert_eq!(pool.healthy_ids(), ["a2"], "a0's heartbeat is stale");
        pool.lost("a2");
        assert!(pool.healthy_ids().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_open_the_breaker_and_retries_avoid_the_failed_agent() {
        let mut pool = PoolView::new(Box::new(LeastConnections::default()), SETTINGS);
        pool.set_endpoints(&endpoints(2));
        pool.report("a0", idle(), false);
        pool.report("a1", idle(), false);
        let (first, _) = pool.choose(&RequestKey::default(), &[]).unwrap();
        pool.finished(&first, Outcome::Failure);
        let (retry, _) = pool
            .choose(&RequestKey::default(), std::slice::from_ref(&first))
            .unwrap();
        assert_ne!(retry, first);
        pool.finished(&retry, Outcome::Success);
        let (again, _) = pool
            .choose(&RequestKey::default(), std::slice::from_ref(&retry))
            .unwrap();
        assert_eq!(again, first);
        pool.finished(&again, Outcome::Failure);
        assert_eq!(
            pool.healthy_ids(),
            std::slice::from_ref(&retry),
            "two failures opened {first}'s circuit"
        );
        tokio::time::advance(SETTINGS.cooldown).await;
        pool.report(&first, idle(), false);
        pool.report(&retry, idle(), false);
        assert_eq!(pool.healthy_ids().len(), 2, "half-open after the cool-down");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_agent_is_out_until_it_reports_and_a_rejoined_one_is_whole() {
        let mut pool = PoolView::new(Box::new(RoundRobin::default()), SETTINGS);
        pool.set_endpoints(&endpoints(2));
        pool.report("a1", idle(), false);
        let key = RequestKey::default();
        let not_a1 = ["a1".to_owned()];
        let on_a0 = |pool: &mut PoolView, outcome| {
            let (id, _) = pool.choose(&key, &not_a1).unwrap();
            pool.finished(&id, outcome);
        };
        for _ in 0..2 {
            pool.report("a0", idle(), false);
            on_a0(&mut pool, Outcome::Lost);
            assert_eq!(pool.healthy_ids(), ["a1"], "a0 is out until it reports");
        }
        pool.report("a0", idle(), false);
        assert_eq!(pool.healthy_ids(), ["a1"], "two losses opened a0's breaker");
        pool.rejoined("a0");
        assert_eq!(
            pool.healthy_ids(),
            ["a0", "a1"],
            "its load stream reconnected"
        );
        let both = ["a0".to_owned(), "a1".to_owned()];
        assert_eq!(
            pool.choose(&key, &both),
            Err(NoAgent::Exhausted),
            "failed on every healthy agent"
        );
        // A probe whose client left frees the probe; a first answer closes the breaker.
        on_a0(&mut pool, Outcome::Failure);
        on_a0(&mut pool, Outcome::Failure);
        tokio::time::advance(SETTINGS.cooldown).await;
        pool.report("a0", idle(), false);
        pool.report("a1", idle(), false);
        let (probe, _) = pool.choose(&key, &not_a1).unwrap();
        assert_eq!(pool.healthy_ids(), ["a1"], "one probe at a time");
        pool.finished(&probe, Outcome::Cancelled);
        assert_eq!(pool.healthy_ids(), ["a0", "a1"]);
        let (probe, _) = pool.choose(&key, &not_a1).unwrap();
        pool.answered(&probe);
        assert_eq!(
            pool.healthy_ids(),
            ["a0", "a1"],
            "closed at its first answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn saturated_agents_are_skipped_until_all_are() {
        let mut pool = PoolView::new(Box::new(RoundRobin::default()), SETTINGS);
        pool.set_endpoints(&endpoints(1));
        pool.report("a0", idle(), false);
        for _ in 0..4 {
            assert!(pool.choose(&RequestKey::default(), &[]).is_ok());
        }
        assert_eq!(
            pool.choose(&RequestKey::default(), &[]),
            Err(NoAgent::Saturated)
        );
        pool.finished("a0", Outcome::Success);
        assert!(pool.choose(&RequestKey::default(), &[]).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_that_turned_a_request_away_is_passed_over_until_it_reports() {
        let mut pool = PoolView::new(Box::new(RoundRobin::default()), SETTINGS);
        pool.set_endpoints(&endpoints(2));
        pool.report("a0", idle(), false);
        pool.report("a1", idle(), false);
        pool.turned_away("a0", Busy::Full);
        for _ in 0..2 {
            let (id, _) = pool.choose(&RequestKey::default(), &[]).unwrap();
            assert_eq!(id, "a1", "a0 said it is full");
            pool.finished(&id, Outcome::Success);
        }
        pool.turned_away("a1", Busy::Draining);
        assert_eq!(
            pool.healthy_ids(),
            ["a0"],
            "a draining agent is out of rotation"
        );
        assert_eq!(
            pool.choose(&RequestKey::default(), &[]),
            Err(NoAgent::Saturated)
        );
        pool.report("a0", idle(), false);
        assert_eq!(
            pool.choose(&RequestKey::default(), &[]).map(|c| c.0),
            Ok("a0".into())
        );
        pool.report("a1", idle(), false);
        assert_eq!(pool.healthy_ids(), ["a0", "a1"]);
    }
}
