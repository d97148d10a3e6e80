//! Waiting on conditions, never on sleeps: poll a probe until it yields, with a deadline.

use std::future::Future;
use std::time::Duration;

/// Polls `probe` (every 100 ms) until it returns `Some`, failing after `limit`.
pub async fn wait_until<T, F, Fut>(limit: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if let Some(value) = probe().await {
            return Ok(value);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
    }
}

/// Polls a plain check until it holds, failing after `limit` with `what` in the error.
pub async fn until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let waited = wait_until(limit, || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await;
    waited.map_err(|e| anyhow::anyhow!("{what}: {e}"))
}
