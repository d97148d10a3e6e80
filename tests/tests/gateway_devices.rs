//! Health-aware routing through the real gateway (static discovery) over two real agents
//! built with fault injection: a degraded device makes its agent get less traffic, a
//! failed one (its agent's only device) none, and the gateway's metrics show each agent's
//! devices by health.

use std::net::SocketAddr;
use std::time::Duration;

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::http::{metric, post_json};
use inferpool_e2e::local::LocalPool;
use serde_json::{Value, json};

const POOL: &str = "hd";
const LIMIT: Duration = Duration::from_secs(60);

async fn gateway(agents: &[&AgentProcess]) -> anyhow::Result<LocalPool> {
    LocalPool::over_agents(POOL, "least_load", agents, 60).await
}

fn gauge(pool: &LocalPool, name: &str, labels: &str) -> Option<f64> {
    let (_, text) = pool.get("/metrics").ok()?;
    metric(&text, &format!("inferpool_gateway_{name}{{{labels}}}"))
}

fn devices(pool: &LocalPool, agent: usize, health: &str) -> Option<f64> {
    let labels = format!("pool=\"{POOL}\",agent=\"{POOL}-{agent}\",health=\"{health}\"");
    gauge(pool, "agent_devices", &labels)
}

fn picks(pool: &LocalPool) -> anyhow::Result<[f64; 2]> {
    pool.picks(POOL)
}

fn chat() -> Value {
    json!({"model": MODEL, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say something."}]})
}

/// Sends `n` requests at once; every one must succeed. The picks they added per agent.
fn burst(pool: &LocalPool, n: usize) -> anyhow::Result<[f64; 2]> {
    let before = picks(pool)?;
    let addr: SocketAddr = pool.addr;
    let threads: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || post_json(addr, "/v1/chat/completions", &chat())))
        .collect();
    for t in threads {
        let reply = t.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        anyhow::ensure!(reply.status == 200, "{}: {}", reply.status, reply.body);
    }
    let after = picks(pool)?;
    Ok([after[0] - before[0], after[1] - before[1]])
}

async fn until(what: &str, check: impl FnMut() -> bool) -> anyhow::Result<()> {
    inferpool_e2e::wait::until(what, LIMIT, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_agents_get_less_traffic_and_failed_ones_none() -> anyhow::Result<()> {
    let config = json!({"devices": {"health": {"retrySeconds": 600}}});
    let (a, b) = tokio::try_join!(
        AgentProcess::start(config.clone()),
        AgentProcess::start(config)
    )?;
    let pool = gateway(&[&a, &b]).await?;
    until("both agents' devices healthy at the gateway", || {
        devices(&pool, 0, "healthy") == Some(1.0) && devices(&pool, 1, "healthy") == Some(1.0)
    })
    .await?;
    // Agent 0's GPU runs hot: degraded, it gets the smaller share of a burst.
    a.inject(&json!({"device": 0, "reading": {"temperature_c": 90}}))?;
    until("agent 0 degraded at the gateway", || {
        devices(&pool, 0, "degraded") == Some(1.0)
    })
    .await?;
    let [to_degraded, to_healthy] = burst(&pool, 24)?;
    eprintln!(
        "a burst of 24: {to_degraded} to the degraded agent, {to_healthy} to the healthy one"
    );
    // Least load with a degraded agent's work counting double: about a third to it.
    assert!(
        to_degraded < to_healthy,
        "degraded {to_degraded}, healthy {to_healthy}"
    );
    // Its device fails outright (an engine error on its next step): no traffic at all.
    a.inject(&json!({"device": 0, "stepErrors": 1}))?;
    let direct = post_json(a.http, "/v1/chat/completions", &chat())?;
    assert!(direct.status >= 500, "{}: {}", direct.status, direct.body);
    until("agent 0 failed at the gateway", || {
        devices(&pool, 0, "failed") == Some(1.0)
    })
    .await?;
    let [to_failed, _] = burst(&pool, 6)?;
    assert_eq!(to_failed, 0.0, "a request went to the agent with no device");
    Ok(())
}
