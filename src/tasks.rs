//! A set of running tasks that shutdown can wait for, and then cut off.
//!
//! Connections and memory's background runs are spawned through a [`Tasks`], so a graceful
//! shutdown can tell how many are still running, wait for them to end within its bound, and
//! cancel the rest. Cancelling drops a task's future at its next wake-up, the way any dropped
//! future ends: whatever it had handed to the store's writer thread is still committed whole,
//! and what it had not handed over is simply not written.

use futures_lite::future;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// How long cancelled tasks get to drop their futures before shutdown stops waiting on them.
const CANCEL_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct Tasks {
    /// Cloned into every task and taken by [`Tasks::close`], so that `ended` reports the end of
    /// the last task once the set is closed. It never carries a message.
    live: Mutex<Option<async_channel::Sender<()>>>,
    ended: async_channel::Receiver<()>,
    /// Closed to cancel every task; each one races its work against it.
    cancel: async_channel::Sender<()>,
    cancelled: async_channel::Receiver<()>,
}

impl Default for Tasks {
    fn default() -> Self {
        let (live, ended) = async_channel::bounded(1);
        let (cancel, cancelled) = async_channel::bounded(1);
        Tasks {
            live: Mutex::new(Some(live)),
            ended,
            cancel,
            cancelled,
        }
    }
}

impl Tasks {
    /// Runs `work` on the executor as a member of the set; false (and `work` dropped unstarted)
    /// once the set is closed.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let Some(live) = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return false;
        };
        let cancelled = self.cancelled.clone();
        crate::runtime::spawn(async move {
            // Dropped after `work` (declared first, dropped last): `ended` hears of a task only
            // once its future, and everything it held, is gone.
            let _live = live;
            future::or(work, async {
                let _ = cancelled.recv().await;
            })
            .await;
        })
        .detach();
        true
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        let template = usize::from(self.live.lock().unwrap_or_else(|p| p.into_inner()).is_some());
        self.ended.sender_count().saturating_sub(template)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new tasks from now on; running ones go on.
    pub fn close(&self) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Resolves once the set is closed and its last task has ended.
    pub async fn ended(&self) {
        // `recv` fails only when every sender is gone: the template and each task's clone.
        let _ = self.ended.recv().await;
    }

    /// Closes the set, cancels every running task and waits (briefly) until they are dropped.
    /// Returns how many were cancelled.
    pub async fn cancel(&self) -> usize {
        self.close();
        let running = self.len();
        self.cancel.close();
        future::or(self.ended(), async {
            smol::Timer::after(CANCEL_GRACE).await;
        })
        .await;
        running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_finished_tasks_and_cancels_the_rest() {
        crate::runtime::start_workers();
        let tasks = Tasks::default();
        assert!(tasks.spawn(async {}));
        let (tx, rx) = async_channel::bounded::<()>(1);
        // Never finishes on its own; holds `tx` until it is dropped.
        assert!(tasks.spawn(async move {
            let _tx = tx;
            future::pending::<()>().await;
        }));
        smol::block_on(async {
            while tasks.len() > 1 {
                smol::Timer::after(Duration::from_millis(5)).await;
            }
            assert_eq!(tasks.cancel().await, 1);
        });
        assert!(tasks.is_empty());
        assert!(rx.is_closed(), "the cancelled task's future was not dropped");
        assert!(!tasks.spawn(async {}), "a closed set took a new task");
    }
}
