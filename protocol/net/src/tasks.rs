//! The tasks a running node or peer owns, and how they end.
//!
//! Stopping has to be complete, not merely requested: a task that outlives its owner keeps
//! writing to a database whose directory its owner may be about to delete (a test's
//! temporary directory, an operator's wiped data directory). sled 0.34 does not survive that:
//! a blob file it cannot create leaves a write slot claimed forever, and every later flush of
//! that database — including the one in its `Drop` — waits forever. So [`Tasks::stop`] asks
//! nicely (the cancellation token), then aborts what did not listen, then waits for the
//! aborted ones; and dropping [`Tasks`] aborts everything still running.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The long-lived tasks of one running node or peer, and the token that asks them to end.
#[derive(Debug)]
pub struct Tasks {
    cancel: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    /// Owns `handles`, which end when `cancel` is cancelled.
    pub fn new(cancel: CancellationToken, handles: Vec<JoinHandle<()>>) -> Self {
        Tasks { cancel, handles }
    }

    /// Asks every task to end and waits up to `grace` for each; aborts the ones still running
    /// then and waits up to `grace` again for them to be dropped. Returns how many tasks had
    /// to be aborted, and how many of those were still not gone (stuck in a poll that never
    /// returns: nothing more can be done for them).
    pub async fn stop(mut self, grace: Duration) -> StopReport {
        self.cancel.cancel();
        let mut report = StopReport::default();
        for mut task in std::mem::take(&mut self.handles) {
            if tokio::time::timeout(grace, &mut task).await.is_ok() {
                continue;
            }
            report.aborted += 1;
            task.abort();
            if tokio::time::timeout(grace, task).await.is_err() {
                report.stuck += 1;
            }
        }
        if report.aborted > 0 {
            tracing::warn!(
                aborted = report.aborted,
                stuck = report.stuck,
                "tasks did not end within {grace:?} of being asked; aborted"
            );
        }
        report
    }

    /// Aborts every task without letting it run its clean-shutdown path (what a crash leaves
    /// behind), and waits for them to be dropped.
    pub async fn abort(mut self) {
        let handles = std::mem::take(&mut self.handles);
        for task in &handles {
            task.abort();
        }
        for task in handles {
            let _ = task.await;
        }
        self.cancel.cancel();
    }
}

impl Drop for Tasks {
    /// Dropped without [`Tasks::stop`]: nothing may keep running unowned.
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in &self.handles {
            task.abort();
        }
    }
}

/// What [`Tasks::stop`] had to do.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Tasks that ignored the token for `grace` and were aborted.
    pub aborted: usize,
    /// Aborted tasks still not dropped after another `grace`.
    pub stuck: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Set when dropped: shows a task's future is gone.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_ignoring_the_token_is_aborted_and_gone_when_stop_returns() {
        let cancel = CancellationToken::new();
        let listening = {
            let c = cancel.clone();
            tokio::spawn(async move { c.cancelled().await })
        };
        let gone = Arc::new(AtomicBool::new(false));
        let deaf = {
            let flag = DropFlag(gone.clone());
            tokio::spawn(async move {
                let _flag = flag;
                std::future::pending::<()>().await
            })
        };
        let tasks = Tasks::new(cancel, vec![listening, deaf]);
        let report = tasks.stop(Duration::from_secs(5)).await;
        assert_eq!(
            report,
            StopReport {
                aborted: 1,
                stuck: 0
            }
        );
        assert!(gone.load(Ordering::SeqCst), "the deaf task still exists");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_tasks_aborts_them() {
        let gone = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(gone.clone());
        let task = tokio::spawn(async move {
            let _flag = flag;
            std::future::pending::<()>().await
        });
        let cancel = CancellationToken::new();
        drop(Tasks::new(cancel.clone(), vec![task]));
        assert!(cancel.is_cancelled());
        // The runtime drops an aborted task the next time it looks at it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !gone.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task was dropped");
    }
}
