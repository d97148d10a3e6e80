//! Bounded blocking workers for the CPU work of a request that is not the engine's:
//! rendering the chat template, tokenizing (prompts up to the body limit, 4 MiB), and
//! embedding. Run on the async threads, one large prompt would stall every connection on
//! its thread; run on tokio's blocking pool without a bound, a burst would start hundreds
//! of threads that fight the engine for the cores. So at most `workers` such jobs run at
//! once, and the rest wait their turn without holding a thread.

use std::sync::Arc;

use tokio::sync::Semaphore;

/// Why a job did not give its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockingError {
    /// The job panicked or the runtime is shutting down.
    #[error("a blocking worker failed: {0}")]
    Failed(String),
}

/// A cheap handle to the workers.
#[derive(Debug, Clone)]
pub struct BlockingWorkers {
    permits: Arc<Semaphore>,
}

impl BlockingWorkers {
    /// At most `workers` (at least one) jobs at once.
    pub fn new(workers: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    /// One worker per CPU this process may use.
    pub fn per_cpu() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Runs `job` on a blocking thread once a worker is free.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BlockingError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| BlockingError::Failed(e.to_string()))?;
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        });
        joined
            .await
            .map_err(|e| BlockingError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_job_runs_off_the_async_thread() {
        // The job blocks until a task on this (only) async thread answers it: run on the
        // async thread, it would wait forever.
        let (ask, asked) = mpsc::channel::<()>();
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let workers = BlockingWorkers::new(1);
        let job = workers.run(move || asked.recv().is_ok());
        let helper = tokio::spawn(async move {
            let _ = ask.send(());
            let _ = answer.send(());
        });
        assert_eq!(job.await, Ok(true));
        assert!(answered.await.is_ok());
        assert!(helper.await.is_ok());
    }

    #[tokio::test]
    async fn no_more_than_the_bound_run_at_once() {
        let workers = BlockingWorkers::new(2);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (started, mut starts) = tokio::sync::mpsc::channel::<()>(8);
        let jobs: Vec<_> = (0..3)
            .map(|_| {
                let (workers, released, started) =
                    (workers.clone(), Arc::clone(&released), started.clone());
                tokio::spawn(async move {
                    workers
                        .run(move || {
                            let _ = started.blocking_send(());
                            released.lock().map(|r| r.recv().is_ok()).unwrap_or(false)
                        })
                        .await
                })
            })
            .collect();
        starts.recv().await;
        starts.recv().await;
        // Two run and wait; the third has not started, however long we look.
        assert_eq!(workers.permits.available_permits(), 0);
        assert!(starts.try_recv().is_err());
        for _ in 0..3 {
            let _ = release.send(());
        }
        for job in jobs {
            assert_eq!(job.await.ok(), Some(Ok(true)));
        }
    }
}
