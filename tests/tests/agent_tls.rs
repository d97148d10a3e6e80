//! TLS between the gateway and its agents, in local mode with real agents and the real
//! model on loopback: with `--upstream-tls-dir` the agents serve both API ports over TLS
//! with the directory's certificate and the gateway dials them over TLS (whole answers on
//! the HTTP port, streams on the gRPC port); with `--agent-tls-mutual` the agents also
//! refuse any client without a certificate their CA signed, while the gateway, which
//! presents one, is served. curl (OpenSSL) is the independent client at the agents' ports.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicUsize;

use inferpool_e2e::certs::{agent_secret, foreign_client};
use inferpool_e2e::curl::curl;
use inferpool_e2e::http::{get, post_json};
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::parts::ScratchDir;
use inferpool_e2e::streams::{Ended, stream_one};
use serde_json::json;

const MODEL: &str = "smollm2-tls";
const AGENT: &str = "tls-0";

fn manifest() -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: tls\nspec:\n  \
         model:\n    source: bundled\n    servedName: {MODEL}\n"
    )
}

/// A whole and a streamed chat through the gateway (plain HTTP at its front door).
fn chats_through(pool: &LocalPool) -> anyhow::Result<()> {
    let body = json!({"model": MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": "Say hello."}]});
    let whole = post_json(pool.addr, "/v1/chat/completions", &body)?;
    assert_eq!(whole.status, 200, "{}", whole.body);
    let streamed = stream_one(pool.addr, MODEL, 1, 4, &AtomicUsize::new(0))?;
    assert!(matches!(streamed, Ended::Completed), "{streamed:?}");
    Ok(())
}

/// curl at agent `port` by the name in its certificate, trusting the test's CA, with
/// `extra` arguments; `Ok(status)` once a TLS session and an HTTP answer came.
fn curl_agent(secret: &Path, port: SocketAddr, path: &str, extra: &[&str]) -> anyhow::Result<u16> {
    let ca = secret.join("ca.crt").display().to_string();
    let resolve = format!("inferpool-agent:{}:127.0.0.1", port.port());
    let url = format!("https://inferpool-agent:{}{path}", port.port());
    let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    Ok(curl(&args, None)?.status)
}

#[tokio::test]
async fn the_gateway_reaches_its_agents_over_tls_and_their_ports_speak_nothing_else()
-> anyhow::Result<()> {
    let dir = ScratchDir::new("agent-tls")?;
    let secret = dir.path().join("secret");
    agent_secret(&secret)?;
    let tls_dir = secret.display().to_string();
    let pool = LocalPool::start_with(&manifest(), MODEL, &["--upstream-tls-dir", &tls_dir]).await?;
    chats_through(&pool)?;
    let (http, grpc) = (pool.agent_http(AGENT)?, pool.agent_grpc(AGENT)?);
    // The HTTP port answers over TLS, with the Secret's certificate for its name.
    assert_eq!(curl_agent(&secret, http, "/healthz", &[])?, 200);
    // Plain text gets no HTTP answer from either port.
    let plain = get(http, "/healthz").map_or(0, |(status, _)| status);
    assert_eq!(plain, 0, "the HTTP port answered plain text");
    let plain_grpc = format!("http://{grpc}/");
    assert!(
        curl(&["--http2-prior-knowledge", &plain_grpc], None).is_err(),
        "the gRPC port answered plain text"
    );
    pool.stop().await?;
    Ok(())
}

#[tokio::test]
async fn under_mutual_tls_agents_serve_the_gateway_and_refuse_clients_without_its_certificate()
-> anyhow::Result<()> {
    let dir = ScratchDir::new("agent-mtls")?;
    let secret = dir.path().join("secret");
    agent_secret(&secret)?;
    let (foreign_cert, foreign_key) = foreign_client(&dir.path().join("foreign"))?;
    let tls_dir = secret.display().to_string();
    let args = ["--upstream-tls-dir", &tls_dir, "--agent-tls-mutual"];
    let pool = LocalPool::start_with(&manifest(), MODEL, &args).await?;
    // The gateway presents the Secret's certificate on both links.
    chats_through(&pool)?;
    let (cert, key) = (secret.join("tls.crt"), secret.join("tls.key"));
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let trusted = ["--cert", cert.as_str(), "--key", key.as_str()];
    let foreign = [
        "--cert",
        foreign_cert.as_str(),
        "--key",
        foreign_key.as_str(),
    ];
    for (port, path) in [
        (pool.agent_http(AGENT)?, "/healthz"),
        (pool.agent_grpc(AGENT)?, "/"),
    ] {
        assert!(
            curl_agent(&secret, port, path, &[]).is_err(),
            "{port} served a client without a certificate"
        );
        assert!(
            curl_agent(&secret, port, path, &foreign).is_err(),
            "{port} served a client whose certificate another CA signed"
        );
        // Any HTTP answer (the gRPC port's to a bare GET included) means the session was
        // accepted.
        let status = curl_agent(&secret, port, path, &trusted)?;
        assert!(status > 0, "{port} gave the trusted client no answer");
    }
    pool.stop().await?;
    Ok(())
}
