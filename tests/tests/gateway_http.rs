//! The gateway's front door as clients meet it: HTTP/2 with prior knowledge and over TLS
//! (curl, trusting the test's own CA), HTTP/1.1 over TLS, the official `openai` client over
//! TLS, requests shaped to smuggle or to exhaust it (refused, nothing reaching an agent),
//! clients that hold connections open (closed after the configured timeouts while others
//! are served), and the connection cap.
//! Real gateway and agent processes with the real model, on loopback.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use inferpool_e2e::certs::certificates;
use inferpool_e2e::curl::curl;
use inferpool_e2e::http::{EventStream, metric, post_json};
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::openai::{check_openai_client, run_openai_client};
use inferpool_e2e::parts::ScratchDir;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

const MODEL: &str = "smollm2-http";
/// The embedding model every local pool serves beside its own.
const EMBEDDING: &str = "all-minilm-l6-v2";

/// One agent is enough: these tests are about the gateway's HTTP.
fn manifest(name: &str) -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: {name}\nspec:\n  \
         model:\n    source: bundled\n    servedName: {MODEL}\n  replicas: 1\n"
    )
}

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": 4, "temperature": 0, "stream": stream,
        "messages": [{"role": "user", "content": "Say yes."}]})
}

/// A whole chat and a streamed chat through curl with `args` (the URL's base first).
fn chats_over(base: &str, args: &[&str], version: &str) -> anyhow::Result<()> {
    let url = format!("{base}/v1/chat/completions");
    let mut with_url = args.to_vec();
    with_url.push(&url);
    let whole = curl(&with_url, Some(&chat(false)))?;
    assert_eq!(
        (whole.status, whole.version.as_str()),
        (200, version),
        "{whole:?}"
    );
    let answer: Value = serde_json::from_str(&whole.body)?;
    assert_eq!(answer["object"], "chat.completion", "{whole:?}");
    let mut streaming = with_url.clone();
    streaming.push("-N");
    let streamed = curl(&streaming, Some(&chat(true)))?;
    assert_eq!((streamed.status, streamed.version.as_str()), (200, version));
    let events: Vec<&str> = streamed
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{streamed:?}");
    assert!(
        events.len() >= 3,
        "a role chunk, tokens, the end: {streamed:?}"
    );
    Ok(())
}

/// Requests the gateway sent to agents so far.
fn picks(pool: &LocalPool) -> anyhow::Result<f64> {
    let (status, text) = pool.get("/metrics")?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("inferpool_gateway_picks_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// Writes `raw` on a new connection and reads until the gateway closes it (or 10 s).
fn exchange(addr: SocketAddr, raw: &[u8]) -> anyhow::Result<String> {
    anyhow::ensure!(addr.ip().is_loopback(), "tests dial loopback only");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A refusal may come (and the connection close) before all of it is written.
    let _ = stream.write_all(raw);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// Every status line in `answer`.
fn statuses(answer: &str) -> Vec<u16> {
    answer
        .lines()
        .filter_map(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

/// A chat request's head (without its framing headers) and body.
fn request_head(version: &str) -> String {
    format!("POST /v1/chat/completions {version}\r\nHost: gw\r\nContent-Type: application/json\r\n")
}

/// Requests whose framing is malformed or ambiguous, each with a valid chat request where
/// a lenient reading would find one: none may be answered 2xx.
fn smuggling_cases() -> Vec<(&'static str, Vec<u8>)> {
    let body = chat(false).to_string();
    let size = format!("{:x}", body.len());
    let head = request_head("HTTP/1.1");
    let chunked = |size_line: &str| {
        format!("{head}Transfer-Encoding: chunked\r\n\r\n{size_line}\r\n{body}\r\n0\r\n\r\n")
    };
    let smuggled = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    vec![
        (
            // Content-Length covers a whole second request that chunked framing ends before.
            "Content-Length with Transfer-Encoding",
            format!(
                "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "{head}Content-Length: {}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len(),
                body.len() + 1
            ),
        ),
        ("a chunk size after a space", chunked(&format!(" {size}"))),
        ("a chunk size with a sign", chunked(&format!("+{size}"))),
        (
            "a bare LF in a chunk extension",
            chunked(&format!("{size};ext\nmore")),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            format!(
                "{}Transfer-Encoding: chunked\r\n\r\n{size}\r\n{body}\r\n0\r\n\r\n",
                request_head("HTTP/1.0")
            ),
        ),
        (
            "a 100 KB header",
            format!(
                "{head}X-Big: {}\r\nContent-Length: {}\r\n\r\n{body}",
                "a".repeat(100 * 1024),
                body.len()
            ),
        ),
        (
            "5000 headers",
            format!(
                "{head}{}Content-Length: {}\r\n\r\n{body}",
                (0..5000)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>(),
                body.len()
            ),
        ),
    ]
    .into_iter()
    .map(|(name, raw)| (name, raw.into_bytes()))
    .collect()
}

/// The limits the timeout tests run with.
const TIMEOUT: u64 = 2;
const MAX_CONNECTIONS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http2_malformed_requests_slow_clients_and_the_connection_cap() -> anyhow::Result<()>
{
    let timeout = TIMEOUT.to_string();
    let cap = MAX_CONNECTIONS.to_string();
    // One listening socket: connections are accepted in the order they came, so the one
    // beyond the cap is the last one.
    let args = [
        "--header-read-timeout-seconds",
        &timeout,
        "--body-read-timeout-seconds",
        &timeout,
        "--max-connections",
        &cap,
        "--gateway-workers",
        "1",
        "--shutdown-grace-seconds",
        &timeout,
    ];
    let pool = LocalPool::start_with(&manifest("plain"), MODEL, &args).await?;
    let base = format!("http://{}", pool.addr);
    chats_over(&base, &["--http2-prior-knowledge"], "2")?;
    chats_over(&base, &["--http1.1"], "1.1")?;
    refuses_malformed_requests(&pool)?;
    closes_slow_clients_and_serves_others(&pool).await?;
    refuses_connections_beyond_the_cap(&pool).await?;
    stops_within_its_grace(pool).await
}

/// A stream in flight whose client no longer reads holds shutdown no longer than the
/// grace (then its connection is closed, and the agents are stopped).
async fn stops_within_its_grace(pool: LocalPool) -> anyhow::Result<()> {
    let body = json!({"model": MODEL, "max_tokens": 1000, "stream": true,
        "messages": [{"role": "user", "content": "Write a very long story."}]});
    let mut stuck = EventStream::open(pool.addr, "/v1/chat/completions", &body)?;
    assert_eq!(stuck.status, 200);
    stuck.next_data()?;
    let started = Instant::now();
    assert_eq!(pool.stop().await?, Some(0));
    let took = started.elapsed();
    println!("stopped with a stuck stream in {took:?} (grace {TIMEOUT} s)");
    assert!(took < Duration::from_secs(TIMEOUT + 10), "{took:?}");
    drop(stuck);
    Ok(())
}

fn refuses_malformed_requests(pool: &LocalPool) -> anyhow::Result<()> {
    let mut before = picks(pool)?;
    for (name, raw) in smuggling_cases() {
        let answer = exchange(pool.addr, &raw)?;
        let got = statuses(&answer);
        assert!(
            got.iter().all(|s| !(200..300).contains(s)),
            "{name}: answered {got:?}"
        );
        assert!(got.len() <= 1, "{name}: a second request was read: {got:?}");
        println!("{name}: {got:?}");
        assert_eq!(picks(pool)?, before, "{name}: a request reached an agent");
        let after = post_json(pool.addr, "/v1/chat/completions", &chat(false))?;
        assert_eq!(after.status, 200, "{name}: the gateway serves on");
        before += 1.0;
        assert_eq!(picks(pool)?, before);
    }
    // Trailing whitespace after a chunk size is read by hyper as what it says (RFC 9112
    // allows whitespace before an extension; the size is unambiguous): one request,
    // answered once, and nothing after it.
    let body = chat(false).to_string();
    let raw = format!(
        "{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x} \r\n{body}\r\n0\r\n\r\n",
        request_head("HTTP/1.1"),
        body.len()
    );
    let got = statuses(&exchange(pool.addr, raw.as_bytes())?);
    println!("a chunk size before a space: {got:?}");
    assert!(
        got == [200] || got.iter().all(|s| (400..500).contains(s)),
        "{got:?}"
    );
    Ok(())
}

/// A connection that sends `first` and then nothing; the time until the gateway closes it
/// (`None` if it is still open after 20 s), and what it answered.
async fn held(addr: SocketAddr, first: Vec<u8>) -> anyhow::Result<(Option<Duration>, String)> {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(&first).await?;
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
    let closed = read.is_ok().then(|| start.elapsed());
    Ok((closed, String::from_utf8_lossy(&got).into_owned()))
}

async fn closes_slow_clients_and_serves_others(pool: &LocalPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let answered = post_json(pool.addr, "/v1/chat/completions", &chat(false))?;
    let normal = started.elapsed();
    assert_eq!(answered.status, 200);
    let half_head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Ty".to_vec();
    let heads: Vec<_> = (0..500)
        .map(|_| tokio::spawn(held(pool.addr, half_head.clone())))
        .collect();
    let stalled = format!(
        "{}Content-Length: 1000\r\n\r\n0123456789",
        request_head("HTTP/1.1")
    );
    let stalled = tokio::spawn(held(pool.addr, stalled.into_bytes()));
    // Meanwhile a client with a whole request is served as fast as before.
    let started = Instant::now();
    let meanwhile = tokio::task::spawn_blocking({
        let addr = pool.addr;
        move || post_json(addr, "/v1/chat/completions", &chat(false))
    })
    .await??;
    let during = started.elapsed();
    assert_eq!(meanwhile.status, 200, "{}", meanwhile.body);
    println!("a chat alone: {normal:?}; beside 501 slow clients: {during:?}");
    assert!(
        during < normal * 3 + Duration::from_secs(1),
        "{during:?} vs {normal:?}"
    );
    let limit = Duration::from_secs(TIMEOUT);
    let mut closed = Vec::new();
    for head in heads {
        let (after, _) = head.await??;
        closed.push(after.ok_or_else(|| anyhow::anyhow!("a half head was never closed"))?);
    }
    closed.sort_unstable();
    println!(
        "500 half heads closed after {:?} .. {:?}",
        closed[0],
        closed[closed.len() - 1]
    );
    assert!(
        closed[0] >= limit - Duration::from_millis(300),
        "{:?}",
        closed[0]
    );
    assert!(closed[closed.len() - 1] <= limit * 3, "{closed:?}");
    let (after, answer) = stalled.await??;
    let after = after.ok_or_else(|| anyhow::anyhow!("the stalled body was never closed"))?;
    println!(
        "a body stalled after 10 of 1000 bytes: closed after {after:?}, {:?}",
        statuses(&answer)
    );
    assert!(
        after >= limit - Duration::from_millis(300) && after <= limit * 3,
        "{after:?}"
    );
    assert_eq!(statuses(&answer), [408], "{answer}");
    Ok(())
}

async fn refuses_connections_beyond_the_cap(pool: &LocalPool) -> anyhow::Result<()> {
    let mut open = Vec::with_capacity(MAX_CONNECTIONS);
    for _ in 0..MAX_CONNECTIONS {
        open.push(tokio::net::TcpStream::connect(pool.addr).await?);
    }
    // The cap is taken when a connection is accepted: wait for the gateway to have taken
    // them all (each costs it one accept) by reading from the last one it would refuse.
    let start = Instant::now();
    let (closed, _) = held(pool.addr, Vec::new()).await?;
    let refused =
        closed.ok_or_else(|| anyhow::anyhow!("a connection beyond the cap stayed open"))?;
    println!("a connection beyond the cap of {MAX_CONNECTIONS} closed after {refused:?}");
    assert!(refused < Duration::from_secs(1), "{refused:?}");
    let still_open = open
        .iter()
        .filter(|s| {
            let mut byte = [0; 1];
            matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert!(
        start.elapsed() < Duration::from_secs(TIMEOUT) && still_open + 5 >= MAX_CONNECTIONS,
        "{still_open} of {MAX_CONNECTIONS} held connections open after {:?}",
        start.elapsed()
    );
    drop(open);
    let after = post_json(pool.addr, "/v1/chat/completions", &chat(false))?;
    assert_eq!(after.status, 200, "served again once connections close");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_http1_with_the_clients_ca() -> anyhow::Result<()> {
    let dir = ScratchDir::new("gateway-tls")?;
    let (ca, cert, key) = certificates(dir.path())?;
    let args = ["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    let probe_ca = ca.clone();
    let pool = LocalPool::start_probed(&manifest("tls"), &args, move |addr| {
        let url = format!("https://{addr}/v1/chat/completions");
        curl(&["--cacert", &probe_ca, &url], Some(&chat(false))).is_ok_and(|g| g.status == 200)
    })
    .await?;
    let base = format!("https://{}", pool.addr);
    chats_over(&base, &["--cacert", &ca, "--http2"], "2")?;
    chats_over(&base, &["--cacert", &ca, "--http1.1"], "1.1")?;
    let seen = run_openai_client(&format!("{base}/v1"), MODEL, EMBEDDING, Some(&ca)).await?;
    check_openai_client(&seen, &[MODEL, EMBEDDING]);
    // A client that does not trust the CA gets no answer; one that speaks plain HTTP to
    // the TLS port gets none either.
    let url = format!("{base}/v1/models");
    assert!(
        curl(&[url.as_str()], None).is_err(),
        "an untrusted certificate"
    );
    let plain = post_json(pool.addr, "/v1/models", &json!({}));
    assert!(
        !plain.is_ok_and(|r| r.status != 0),
        "plain HTTP on the TLS port"
    );
    let metrics = curl(&["--cacert", &ca, &format!("{base}/metrics")], None)?;
    let key = "inferpool_gateway_requests_total{pool=\"tls\",outcome=\"ok\"}";
    assert!(
        metric(&metrics.body, key).unwrap_or(0.0) >= 4.0,
        "{}",
        metrics.body
    );
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}

/// Whether the gateway takes `agent` of pool `frozen` as healthy.
fn healthy(pool: &LocalPool, agent: &str) -> Option<bool> {
    let (_, text) = pool.get("/metrics").ok()?;
    let key = format!("inferpool_gateway_agent_healthy{{pool=\"frozen\",agent=\"{agent}\"}}");
    metric(&text, &key).map(|h| h == 1.0)
}

/// A long streamed chat, open at its first token.
fn long_stream(addr: SocketAddr, n: usize) -> anyhow::Result<EventStream> {
    let body = json!({"model": MODEL, "max_tokens": 400, "stream": true,
        "messages": [{"role": "user", "content": format!("Tell story number {n}.")}]});
    let mut stream = EventStream::open(addr, "/v1/chat/completions", &body)?;
    anyhow::ensure!(stream.status == 200, "{}", stream.rest());
    for _ in 0..2 {
        stream.next_data()?;
    }
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_noticed_within_the_keep_alive_timeout() -> anyhow::Result<()> {
    let manifest = manifest("frozen").replace("replicas: 1", "replicas: 2");
    let pool = LocalPool::start(&manifest, MODEL).await?;
    let victim = pool
        .agent_pid("frozen-0")
        .ok_or_else(|| anyhow::anyhow!("no agent frozen-0"))?;
    // The pool answers once one agent is ready; round robin spreads the streams only once
    // the gateway has both.
    inferpool_e2e::wait::wait_until(Duration::from_secs(300), || {
        let both = ["frozen-0", "frozen-1"]
            .iter()
            .all(|a| healthy(&pool, a) == Some(true));
        async move { both.then_some(()) }
    })
    .await?;
    // Round robin: one stream on each agent.
    let streams = [long_stream(pool.addr, 0)?, long_stream(pool.addr, 1)?];
    LocalPool::signal(victim, "-STOP")?;
    let frozen = Instant::now();
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::task::spawn_blocking(move || (s.collect(), frozen.elapsed())))
        .collect();
    inferpool_e2e::wait::wait_until(Duration::from_secs(15), || {
        let out = healthy(&pool, "frozen-0") == Some(false);
        async move { out.then_some(()) }
    })
    .await?;
    let noticed = frozen.elapsed();
    for _ in 0..4 {
        let answered = post_json(pool.addr, "/v1/chat/completions", &chat(false))?;
        assert_eq!(
            answered.status, 200,
            "new requests avoid it: {}",
            answered.body
        );
    }
    let mut failed_after = None;
    for reader in readers {
        let (events, ended) = reader.await?;
        let (events, done) = events?;
        let failed = events.iter().any(|e| e["error"]["type"].is_string());
        assert!(done, "each stream ends with [DONE]");
        if failed {
            failed_after = Some(ended);
        }
    }
    LocalPool::signal(victim, "-CONT")?;
    let failed_after = failed_after.ok_or_else(|| anyhow::anyhow!("no stream saw the freeze"))?;
    inferpool_e2e::faults::row(
        "agent SIGSTOP (hung)",
        "out of rotation < 8 s, its streams end with an error < 10 s, new requests served",
        &format!("out after {noticed:?}, its stream ended after {failed_after:?}, 4 of 4 served"),
    );
    assert!(noticed < Duration::from_secs(8), "{noticed:?}");
    assert!(failed_after < Duration::from_secs(10), "{failed_after:?}");
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}
