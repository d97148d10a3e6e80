//! The official `openai` Python client (from PyPI, see `hack/python-env`) run against a
//! server: `tests/python/openai_client.py` drives every endpoint and prints what it saw,
//! and `check_openai_client` asserts what any of our servers must answer.

use serde_json::{Value, json};

use crate::parts::{openai_python, repo_root};

/// Runs the client against `base_url` (ending in `/v1`) for `model` and `embedding_model`,
/// trusting the CA file `ca` when given (a TLS server of the test's own); what it saw.
pub async fn run_openai_client(
    base_url: &str,
    model: &str,
    embedding_model: &str,
    ca: Option<&str>,
) -> anyhow::Result<Value> {
    let python = openai_python()?;
    let script = repo_root().join("tests/python/openai_client.py");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .args([base_url, model, embedding_model])
        .env("NO_PROXY", "127.0.0.1");
    if let Some(ca) = ca {
        command.env("INFERPOOL_TEST_CA", ca);
    }
    let out = command.output().await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "the client failed:\n{stderr}");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// What the client saw is right: a chat, the same chat streamed (same text, finish reason
/// and usage), a completion, `models` listed (in any order), 384-dimensional embeddings
/// of both inputs, and 404 for an unknown model.
pub fn check_openai_client(seen: &Value, models: &[&str]) {
    let chat = &seen["chat"];
    assert!(
        chat["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["stream"]["content"], chat["content"], "{seen}");
    assert_eq!(seen["stream"]["finish_reason"], chat["finish_reason"]);
    assert_eq!(
        seen["stream"]["completion_tokens"], chat["completion_tokens"],
        "{seen}"
    );
    assert!(
        seen["completion"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{seen}"
    );
    let mut listed: Vec<&str> = seen["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    listed.sort_unstable();
    let mut expected = models.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected, "{seen}");
    assert_eq!(seen["embeddings"], json!([384, 384]), "{seen}");
    assert_eq!(seen["unknown_model"], 404, "{seen}");
}
