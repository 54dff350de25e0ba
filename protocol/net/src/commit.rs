//! Group commit over sled: [`Committer::commit`] resolves once every write made before the
//! call is flushed, and one flush serves every request waiting at that moment.
//!
//! Answers that promise durability (an ack, `Stored`, `Replicated`) leave only after the
//! flush that covers them: [`Committer::after_commit`] is that "commit, then answer" step, run
//! in a task the committer owns. The committer never decides what is written; it only makes
//! it durable.

use std::{future::Future, time::Duration};

use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Most commit requests waiting for the committer task.
pub const COMMIT_QUEUE: usize = 4096;

type Waiter = oneshot::Sender<Result<(), sled::Error>>;

/// Cloneable handle to a database's group committer task.
///
/// The task ends when [`Committer::shutdown`] is called or the last handle is dropped; the
/// tasks started by [`Committer::after_commit`] end with it.
#[derive(Clone)]
pub struct Committer {
    requests: mpsc::Sender<Waiter>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Committer {
    /// Starts the committer task for `db`; it waits up to `delay` to gather more requests.
    /// Must run inside a tokio runtime.
    pub fn spawn(db: sled::Db, delay: Duration) -> Self {
        let (requests, rx) = mpsc::channel(COMMIT_QUEUE);
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = run_committer(db, rx, delay) => {}
                _ = task_stop.cancelled() => {}
            }
        });
        Committer {
            requests,
            tasks,
            stop,
        }
    }

    /// Resolves once everything written before the call is durable.
    pub fn commit(&self) -> impl Future<Output = Result<(), sled::Error>> + Send + 'static {
        let requests = self.requests.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            let stopped = || sled::Error::ReportableBug("commit task stopped".into());
            requests.send(tx).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        }
    }

    /// Commit, then answer: runs `on_durable` with the outcome of a commit of everything
    /// written before the call, without making the caller wait. Dropped unrun at shutdown.
    pub fn after_commit<F>(
        &self,
        on_durable: impl FnOnce(Result<(), sled::Error>) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let commit = self.commit();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = async move { on_durable(commit.await).await } => {}
                _ = stop.cancelled() => {}
            }
        });
    }

    /// Stops the committer task and every pending [`Committer::after_commit`], and waits for
    /// them. Flush what must be durable first: later commits fail.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The group committer: one flush for every batch of waiting commit requests.
async fn run_committer(db: sled::Db, mut rx: mpsc::Receiver<Waiter>, delay: Duration) {
    while let Some(first) = rx.recv().await {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        let db2 = db.clone();
        let result = match tokio::task::spawn_blocking(move || db2.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sled::Error::ReportableBug("flush task panicked".into())),
        };
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_then_answer_runs_after_the_flush_and_shutdown_ends_the_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let committer = Committer::spawn(db.clone(), Duration::ZERO);
        db.insert("k", "v").unwrap();
        let (tx, rx) = oneshot::channel();
        committer.after_commit(move |r| async move {
            let _ = tx.send(r.is_ok());
        });
        assert!(rx.await.unwrap());
        committer.commit().await.unwrap();
        committer.shutdown().await;
        assert!(committer.commit().await.is_err());
    }
}
