//! The official `openai` Python client (from PyPI) works against a real agent.

use inferpool_e2e::agent::{AgentProcess, EMBEDDING_MODEL, MODEL};
use inferpool_e2e::openai::{check_openai_client, run_openai_client};

#[tokio::test]
async fn the_official_openai_client_works_for_every_endpoint() -> anyhow::Result<()> {
    let agent = AgentProcess::start(serde_json::json!({})).await?;
    let base_url = format!("http://{}/v1", agent.http);
    let seen = run_openai_client(&base_url, MODEL, EMBEDDING_MODEL, None).await?;
    check_openai_client(&seen, &[MODEL, EMBEDDING_MODEL]);
    // The agent lists its own model first.
    assert_eq!(seen["models"], serde_json::json!([MODEL, EMBEDDING_MODEL]));
    Ok(())
}
