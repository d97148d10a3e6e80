//! API keys and quotas at the gateway, in local mode with a real agent and the real model:
//! no key and an unknown key are 401, a model the key may not use is 403, a key past its
//! requests per minute is 429 with `Retry-After`, all in OpenAI's error shape; a key
//! rotated in the key file takes effect without a restart; usage is counted by key id and
//! no key appears in the metrics or the logs.

use std::path::Path;
use std::time::Duration;

use inferpool_e2e::curl::curl;
use inferpool_e2e::http::{Reply, get, header, post};
use inferpool_e2e::local::LocalPool;
use inferpool_e2e::parts::ScratchDir;
use inferpool_e2e::wait::wait_until;
use inferpool_operator::gateway::auth::keys::{hash_key, to_hex};
use serde_json::json;

const MODEL: &str = "smollm2-keys";

fn manifest() -> String {
    format!(
        "apiVersion: inferpool.dev/v1alpha1\nkind: InferencePool\nmetadata:\n  name: keys\nspec:\n  \
         model:\n    source: bundled\n    servedName: {MODEL}\n"
    )
}

/// Writes the key file: `(id, key, models, requests per minute)` each.
fn write_keys(path: &Path, keys: &[(&str, &str, &[&str], Option<u32>)]) -> anyhow::Result<()> {
    let entries: Vec<_> = keys
        .iter()
        .map(|(id, key, models, rpm)| {
            json!({"id": id, "sha256": to_hex(&hash_key(key)), "models": models,
                "requestsPerMinute": rpm})
        })
        .collect();
    // Written aside and renamed in, as the kubelet swaps a Secret's files.
    let aside = path.with_extension("new");
    std::fs::write(&aside, json!({ "keys": entries }).to_string())?;
    std::fs::rename(aside, path)?;
    Ok(())
}

fn chat(addr: std::net::SocketAddr, key: Option<&str>) -> anyhow::Result<Reply> {
    let body = json!({"model": MODEL, "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}]});
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    post(
        addr,
        "/v1/chat/completions",
        &headers,
        body.to_string().as_bytes(),
    )
}

fn error_type(reply: &Reply) -> anyhow::Result<String> {
    let json = reply.json()?;
    Ok(json["error"]["type"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn api_keys_refuse_by_key_model_and_quota_and_rotate_without_a_restart() -> anyhow::Result<()>
{
    let dir = ScratchDir::new("keys")?;
    let file = dir.path().join("keys.json");
    let models: &[&str] = &[MODEL];
    let elsewhere: &[&str] = &["another-model"];
    write_keys(
        &file,
        &[
            ("probe", "sk-probe-0001", &[], None),
            ("team-a", "sk-team-a-0001", models, Some(2)),
            ("team-b", "sk-team-b-0001", elsewhere, None),
        ],
    )?;
    let path = file.to_string_lossy().into_owned();
    let pool = LocalPool::start_probed(&manifest(), &["--api-keys", &path], |addr| {
        chat(addr, Some("sk-probe-0001")).is_ok_and(|r| r.status == 200)
    })
    .await?;
    let addr = pool.addr;

    let missing = chat(addr, None)?;
    assert_eq!(
        (missing.status, error_type(&missing)?.as_str()),
        (401, "invalid_api_key")
    );
    let unknown = chat(addr, Some("sk-nobody"))?;
    assert_eq!(
        (unknown.status, error_type(&unknown)?.as_str()),
        (401, "invalid_api_key")
    );
    assert_eq!(
        get(addr, "/v1/models")?.0,
        401,
        "the model list needs a key too"
    );
    // A key's model list holds only the models it may use.
    let listed = |key: &str| -> anyhow::Result<String> {
        let bearer = format!("authorization: Bearer {key}");
        let url = format!("http://{addr}/v1/models");
        Ok(curl(&["-H", &bearer, &url], None)?.body)
    };
    assert!(
        listed("sk-team-a-0001")?.contains(MODEL),
        "team-a's list lacks its model"
    );
    assert!(
        !listed("sk-team-b-0001")?.contains(MODEL),
        "team-b's list revealed a model it may not use"
    );
    let wrong_model = chat(addr, Some("sk-team-b-0001"))?;
    assert_eq!(wrong_model.status, 403, "{}", wrong_model.body);
    assert_eq!(error_type(&wrong_model)?, "model_not_allowed");

    // Two requests a minute: the third is refused, told when to come back.
    for _ in 0..2 {
        let ok = chat(addr, Some("sk-team-a-0001"))?;
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let over = chat(addr, Some("sk-team-a-0001"))?;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(error_type(&over)?, "rate_limit_exceeded");
    let retry: u64 = header(&over.head, "retry-after").unwrap_or("0").parse()?;
    assert!((1..=30).contains(&retry), "retry-after {retry}");

    // Rotation: team-b gets a new key for this model; the old key stops working.
    write_keys(
        &file,
        &[
            ("probe", "sk-probe-0001", &[], None),
            ("team-a", "sk-team-a-0001", models, Some(2)),
            ("team-b", "sk-team-b-0002", models, None),
        ],
    )?;
    wait_until(Duration::from_secs(30), || async {
        chat(addr, Some("sk-team-b-0002"))
            .ok()
            .filter(|r| r.status == 200)
    })
    .await?;
    assert_eq!(chat(addr, Some("sk-team-b-0001"))?.status, 401);

    let (_, metrics) = get(addr, "/metrics")?;
    let over_line =
        "inferpool_gateway_key_requests_total{key_id=\"team-a\",outcome=\"over_requests_quota\"} 1";
    assert!(metrics.contains(over_line), "{metrics}");
    assert!(
        metrics.contains("key_id=\"team-b\",outcome=\"model_not_allowed\"} 1"),
        "{metrics}"
    );
    for text in [metrics, pool.log_text()] {
        assert!(
            !text.contains("sk-team") && !text.contains("sk-probe"),
            "a key was written out"
        );
    }
    assert_eq!(pool.stop().await?, Some(0));
    Ok(())
}
