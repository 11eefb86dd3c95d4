//! The executor's tracked task set: every task the executor starts (one per
//! execution, plus the expiry of finished ones) runs here, so that shutdown
//! can tell them all to stop and wait until each has.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tasks and the token that tells them to stop. Clones share the set.
#[derive(Debug, Default, Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Runs `task` in the set, unless the set is shutting down. True when it runs.
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.stop.is_cancelled() {
            return false;
        }
        self.tracker.spawn(task);
        true
    }

    /// Runs `task` in the set and hands back its handle, unless the set is
    /// shutting down.
    pub fn track<F>(&self, task: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.stop.is_cancelled() {
            return None;
        }
        Some(self.tracker.spawn(task))
    }

    /// Cancelled when the set shuts down.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tells every task to stop; accepts no new ones.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Shuts down and resolves once every task has ended.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn shutdown_waits_for_every_task_and_refuses_new_ones() {
        let tasks = Tasks::new();
        let ended = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let (stop, ended) = (tasks.stop_token().clone(), ended.clone());
            assert!(tasks.spawn(async move {
                stop.cancelled().await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                ended.fetch_add(1, Ordering::SeqCst);
            }));
        }
        tasks.shutdown().await;
        assert_eq!(ended.load(Ordering::SeqCst), 3);
        assert!(!tasks.spawn(async {}));
    }
}
