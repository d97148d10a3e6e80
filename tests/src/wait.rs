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
