//! Each picking strategy through the real gateway (`inferpool-operator local --agent`, static
//! discovery) over two real agents with the real model: who gets the requests, read from
//! the gateway's per-agent pick counters.

use std::net::SocketAddr;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::http::{metric, post_json};
use inferpool_e2e::local::LocalPool;
use serde_json::{Value, json};

/// The pool's name: its agents are `st-0` and `st-1`.
const POOL: &str = "st";

/// A gateway for one pool with `strategy` over `agents`.
async fn gateway(strategy: &str, agents: &[&AgentProcess]) -> anyhow::Result<LocalPool> {
    LocalPool::over_agents(POOL, strategy, agents, 120).await
}

/// Requests picked per agent so far.
fn picks(pool: &LocalPool) -> anyhow::Result<[f64; 2]> {
    pool.picks(POOL)
}

fn chat(system: &str, user: &str, max_tokens: u32) -> Value {
    json!({"model": MODEL, "max_tokens": max_tokens, "user": user, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "Say something."}]})
}

/// Sends `bodies` one after the other (or all at once) and returns the picks they added.
fn send(pool: &LocalPool, bodies: Vec<Value>, concurrent: bool) -> anyhow::Result<[f64; 2]> {
    let before = picks(pool)?;
    let addr: SocketAddr = pool.addr;
    let call = move |body: Value| -> anyhow::Result<()> {
        let reply = post_json(addr, "/v1/chat/completions", &body)?;
        anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
        Ok(())
    };
    if concurrent {
        let threads: Vec<_> = bodies
            .into_iter()
            .map(|b| std::thread::spawn(move || call(b)))
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
    } else {
        bodies.into_iter().try_for_each(call)?;
    }
    let after = picks(pool)?;
    Ok([after[0] - before[0], after[1] - before[1]])
}

/// A system prompt longer than the affinity key, one of several.
fn system_prompt(n: usize) -> String {
    format!("You are assistant number {n}. ").repeat(12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_spreads_or_sticks_as_it_should() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(
        AgentProcess::start(json!({})),
        AgentProcess::start(json!({}))
    )?;
    let plain = |n: usize| {
        (0..n)
            .map(|i| chat("Be brief.", &format!("u{i}"), 4))
            .collect()
    };

    let pool = gateway("round_robin", &[&a, &b]).await?;
    assert_eq!(
        send(&pool, plain(8), false)?,
        [4.0, 4.0],
        "round_robin alternates"
    );
    pool.stop().await?;

    for strategy in ["least_connections", "least_load"] {
        let pool = gateway(strategy, &[&a, &b]).await?;
        let spread = send(&pool, plain(8), true)?;
        assert!(spread.iter().all(|&n| n >= 2.0), "{strategy}: {spread:?}");
        pool.stop().await?;
    }

    let pool = gateway("prefix_affinity", &[&a, &b]).await?;
    let same: Vec<Value> = (0..6)
        .map(|i| chat(&system_prompt(0), &format!("u{i}"), 4))
        .collect();
    let stuck = send(&pool, same, false)?;
    assert!(stuck.contains(&6.0), "one prefix, one agent: {stuck:?}");
    let several = (0..8).map(|i| chat(&system_prompt(i), "u", 4)).collect();
    let spread = send(&pool, several, false)?;
    assert!(spread.iter().all(|&n| n >= 1.0), "8 prefixes: {spread:?}");
    pool.stop().await?;

    let pool = gateway("session_affinity", &[&a, &b]).await?;
    let alice = (0..6).map(|_| chat("Be brief.", "alice", 4)).collect();
    let stuck = send(&pool, alice, false)?;
    assert!(stuck.contains(&6.0), "one session, one agent: {stuck:?}");
    let users = (0..8)
        .map(|i| chat("Be brief.", &format!("user{i}"), 4))
        .collect();
    let spread = send(&pool, users, false)?;
    assert!(spread.iter().all(|&n| n >= 1.0), "8 sessions: {spread:?}");
    pool.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_gets_less_traffic_by_load_and_by_capacity() -> anyhow::Result<()> {
    // The slow agent decodes one sequence at a time: under concurrent load its queue grows.
    let slow = json!({"batching": {"maxBatchSize": 1}});
    let (fast, slow) = tokio::try_join!(AgentProcess::start(json!({})), AgentProcess::start(slow))?;
    let load = |n: usize| {
        (0..n)
            .map(|i| chat("Tell a story.", &format!("u{i}"), 16))
            .collect()
    };

    let pool = gateway("least_load", &[&fast, &slow]).await?;
    let [to_fast, to_slow] = send(&pool, load(24), true)?;
    assert!(
        to_slow * 3.0 <= to_fast,
        "least_load: fast {to_fast}, slow {to_slow}"
    );
    pool.stop().await?;

    // Weighted by reported capacity (16 slots against 1).
    let pool = gateway("weighted", &[&fast, &slow]).await?;
    let [to_fast, to_slow] = send(&pool, load(16), false)?;
    assert!(to_slow <= 4.0, "weighted: fast {to_fast}, slow {to_slow}");
    pool.stop().await?;
    Ok(())
}

/// Response-cache hits and lookups over both agents.
fn cache_counts(agents: &[&AgentProcess]) -> anyhow::Result<(f64, f64)> {
    let (mut hits, mut lookups) = (0.0, 0.0);
    for agent in agents {
        let text = agent.metrics()?;
        let series = |s: &str| metric(&text, &format!("inferpool_agent_cache_{s}")).unwrap_or(0.0);
        let hit = series("hits_total{kind=\"exact\"}") + series("hits_total{kind=\"semantic\"}");
        hits += hit;
        lookups += hit + series("misses_total{kind=\"answer\"}");
    }
    Ok((hits, lookups))
}

/// The agents' cache hit ratio over a workload of 8 system prompts with 2 questions each,
/// asked 3 times over, sent one after the other; each round starts one request later, so
/// that a repeat never lands on the same agent by the parity of its position.
async fn hit_ratio(strategy: &str, agents: &[&AgentProcess]) -> anyhow::Result<f64> {
    let workload: Vec<Value> = (0..48)
        .map(|position| {
            let (round, j) = (position / 16, position % 16);
            let distinct = (j + round) % 16;
            let (prompt, question) = (distinct / 2, distinct % 2);
            let mut body = chat(&system_prompt(prompt), "u", 4);
            body["temperature"] = json!(0);
            body["messages"][1]["content"] = json!(format!("{strategy}: question {question}?"));
            body
        })
        .collect();
    let pool = gateway(strategy, agents).await?;
    let before = cache_counts(agents)?;
    send(&pool, workload, false)?;
    let after = cache_counts(agents)?;
    pool.stop().await?;
    let lookups = after.1 - before.1;
    anyhow::ensure!(
        lookups == 48.0,
        "{strategy}: {lookups} cache lookups for 48 requests"
    );
    Ok((after.0 - before.0) / lookups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_affinity_finds_the_agents_caches_more_often_than_round_robin() -> anyhow::Result<()>
{
    let (a, b) = tokio::try_join!(
        AgentProcess::start(json!({})),
        AgentProcess::start(json!({}))
    )?;
    let affinity = hit_ratio("prefix_affinity", &[&a, &b]).await?;
    let round_robin = hit_ratio("round_robin", &[&a, &b]).await?;
    eprintln!("cache hit ratio: prefix_affinity {affinity:.2}, round_robin {round_robin:.2}");
    // Affinity sends every repeat where its first answer is cached: 2 hits in 3.
    assert!(
        (affinity - 2.0 / 3.0).abs() < 1e-9,
        "prefix_affinity {affinity}"
    );
    // Round robin alternates: each request's repeats meet a cold agent once more.
    assert!(round_robin < affinity, "round_robin {round_robin}");
    Ok(())
}
