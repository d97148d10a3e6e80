//! A slow and lossy link between the gateway and an agent: the agent runs in a network
//! namespace the test creates, and `tc` shapes both ends of the veth pair to it: `netem`
//! delays and drops packets where the kernel has it; where it has not (this project's
//! CI VMs build no sch_netem), a token bucket (`tbf`) makes the link a slow bottleneck
//! that drops what would queue past its latency bound. The gateway (in this process,
//! static discovery) streams over that link: every request still completes, later.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use inferpool_e2e::agent::{AgentProcess, MODEL};
use inferpool_e2e::http::post_json;
use inferpool_e2e::netns::NetNs;
use inferpool_e2e::streams::{Ended, stream_one};
use inferpool_e2e::wait::wait_until;
use inferpool_operator::gateway::core::view::Endpoint;
use inferpool_operator::gateway::discovery::{Discovery as _, StaticDiscovery};
use inferpool_operator::gateway::dispatch::gateway::Gateway;
use inferpool_operator::gateway::runtime;
use inferpool_protocol::listen::WorkerSockets;
use serde_json::json;

/// Streams per round, one after another.
const STREAMS: usize = 6;
/// Tokens per stream: enough bytes for the bottleneck to show.
const TOKENS: u32 = 32;
/// The shaping, in order of preference.
const SHAPES: [&str; 2] = [
    "netem delay 40ms 10ms loss 3%",
    "tbf rate 16kbit burst 2kb latency 300ms",
];

/// The median time of `STREAMS` streamed chats of `TOKENS` tokens; every one must complete.
fn round(addr: SocketAddr) -> anyhow::Result<Duration> {
    let mut took = Vec::new();
    for i in 0..STREAMS {
        let started = Instant::now();
        let ended = stream_one(addr, MODEL, i, TOKENS, &AtomicUsize::new(0))?;
        assert!(matches!(ended, Ended::Completed), "stream {i}: {ended:?}");
        took.push(started.elapsed());
    }
    took.sort();
    Ok(took[STREAMS / 2])
}

/// Shapes the link with the first of `SHAPES` the kernel has; returns it.
fn shape(netns: &NetNs) -> anyhow::Result<&'static str> {
    let mut refused = Vec::new();
    for shape in SHAPES {
        match netns.shape(shape) {
            Ok(()) => return Ok(shape),
            Err(e) => refused.push(format!("{e:#}")),
        }
    }
    anyhow::bail!("no shaping took: {refused:?}")
}

// The gateway runs on this test's runtime while the test's HTTP client blocks: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_and_lossy_link_to_an_agent_delays_answers_and_loses_none() -> anyhow::Result<()> {
    let netns = NetNs::create()?;
    let agent = AgentProcess::start_in(&netns, json!({})).await?;
    let manifest = format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: link\nspec:\n  \
         model:\n    servedName: {MODEL}\n"
    );
    let pool = inferpool_operator::manifest::parse_pools(&manifest)?.remove(0);
    let endpoint = Endpoint {
        id: "link-0".into(),
        grpc: agent.grpc,
        http: agent.http,
    };
    let gateway = Gateway::new();
    let discovery = StaticDiscovery {
        pools: vec![(pool, vec![endpoint])],
        queue_wait: Duration::from_secs(30),
    };
    discovery.run(gateway.clone()).await;
    let bound = WorkerSockets::bind(SocketAddr::from(([127, 0, 0, 1], 0)), 2)?;
    let addr = bound.addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = runtime::start_with(bound, &gateway, &stopped, Default::default())?;
    let body =
        json!({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    wait_until(Duration::from_secs(60), || async {
        let answered = post_json(addr, "/v1/chat/completions", &body);
        answered.is_ok_and(|r| r.status == 200).then_some(())
    })
    .await?;

    let clear = tokio::task::spawn_blocking(move || round(addr)).await??;
    let shape = shape(&netns)?;
    let shaped = tokio::task::spawn_blocking(move || round(addr)).await??;
    let (dropped, held_back) = netns.shaped()?;
    inferpool_e2e::faults::row(
        &format!("slow, lossy link to an agent (tc {shape}, each way)"),
        "every request completes over the shaped link",
        &format!(
            "{STREAMS}/{STREAMS} completed each round; median stream {clear:?} clear, \
             {shaped:?} shaped; the link dropped {dropped} packets, held back {held_back}"
        ),
    );
    // The shaping took part: it dropped or held back traffic.
    assert!(dropped + held_back > 0, "the link was never shaped");
    let _ = stop.send(true);
    serving.join().await?;
    Ok(())
}
