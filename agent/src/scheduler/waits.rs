//! What the engine loop waits on when it has nothing to step: the next command, a paused
//! client making room, or a time limit.

use std::time::Duration;

use tokio::sync::mpsc;

use super::command::Command;
use super::sequence::Sequence;

/// The sooner of two optional waits.
pub(super) fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Waits until a paused sequence's client reads (or leaves), a submission arrives (which it
/// returns) or `limit` passes.
pub(super) async fn room_or_submission(
    running: &[Sequence],
    submissions: &mut mpsc::Receiver<Command>,
    limit: Option<Duration>,
) -> Option<Command> {
    let room = futures::future::select_all(running.iter().map(|r| Box::pin(r.room())));
    let submission = async {
        match submissions.is_closed() {
            true => std::future::pending().await,
            false => submissions.recv().await,
        }
    };
    let limit = async {
        match limit {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        s = submission => s,
        _ = room => None,
        () = limit => None,
    }
}

/// The next submission, waiting at most `limit` (forever when `None`).
pub(super) async fn next_submission(
    submissions: &mut mpsc::Receiver<Command>,
    limit: Option<Duration>,
) -> Result<Option<Command>, tokio::time::error::Elapsed> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, submissions.recv()).await,
        None => Ok(submissions.recv().await),
    }
}
