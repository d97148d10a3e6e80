//! The official `openai` Python client (from PyPI) works against a real agent.

use inferpool_e2e::agent::{AgentProcess, EMBEDDING_MODEL, MODEL};
use inferpool_e2e::parts::{openai_python, repo_root};

#[tokio::test]
async fn the_official_openai_client_works_for_every_endpoint() -> anyhow::Result<()> {
    let python = openai_python()?;
    let agent = AgentProcess::start(serde_json::json!({})).await?;
    let script = repo_root().join("tests/python/openai_client.py");
    let base_url = format!("http://{}/v1", agent.http);
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([base_url.as_str(), MODEL, EMBEDDING_MODEL])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed:\n{stderr}");
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let chat = &seen["chat"];
    assert!(
        chat["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["stream"]["content"], chat["content"], "{seen}");
    assert_eq!(seen["stream"]["finish_reason"], chat["finish_reason"]);
    assert_eq!(
        seen["stream"]["completion_tokens"],
        chat["completion_tokens"]
    );
    assert!(
        seen["completion"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    assert_eq!(seen["models"], serde_json::json!([MODEL, EMBEDDING_MODEL]));
    assert_eq!(seen["embeddings"], serde_json::json!([384, 384]));
    assert_eq!(seen["unknown_model"], 404);
    Ok(())
}
