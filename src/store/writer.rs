//! The one writer thread. Every memory write runs here, in groups, one commit per group.
//!
//! redb admits one write transaction at a time and each commit fsyncs (~0.4 ms on a quiet
//! disk, several ms on a busy one). Callers hand their write over as a closure; the thread
//! runs every closure queued at that moment in one transaction and commits once, so N
//! concurrent exchanges cost one fsync instead of N, and no executor thread ever blocks on a
//! commit. A caller's write is durable exactly when its future resolves `Ok`.
//!
//! Invariant every op keeps: it returns a caller error ([`StoreError::Conflict`],
//! [`StoreError::NotFound`] or [`StoreError::Quota`]) only before its first write, so its group can still commit. An
//! I/O failure ([`StoreError::Failed`]) in any op, or in the commit, rolls the whole group back
//! and every op in it reports the failure.
//!
//! After a failed commit redb refuses every later write until the file is opened again: once
//! the group's callers have their error, the thread reopens the database (redb recovers it to
//! the last commit, so nothing acknowledged is lost) and carries on with the next group. If it
//! cannot reopen, the store is dead: every later write fails, and the server, told through
//! [`super::Store::dead`], answers what is in flight, shuts down and exits non-zero so a
//! supervisor (systemd's `Restart=`) restarts it.
//!
//! A record that does not decode ([`StoreError::Corrupt`]) rolls its group back too (an op may
//! have written before it met the record), but the database is sound: no reopen, and the
//! store is not reported unhealthy.

use super::{Shared, StoreError};
use redb::{TableDefinition, WriteTransaction};
use std::sync::Arc;

/// Most ops committed together; bounds the time a group holds its callers.
const MAX_GROUP: usize = 256;

/// A write waiting for the writer thread.
trait Job: Send {
    /// Runs the op; an error is an I/O failure that must roll the group back.
    fn run(&mut self, tx: &WriteTransaction) -> Result<(), StoreError>;
    /// Tells the waiting caller the outcome; `failure` is set when the group did not commit.
    fn finish(self: Box<Self>, failure: Option<&StoreError>);
}

struct Op<F, T> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: async_channel::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Op<F, T>
where
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, tx: &WriteTransaction) -> Result<(), StoreError> {
        let result = self.op.take().map(|op| op(tx));
        let io = match &result {
            Some(Err(e @ (StoreError::Failed(_) | StoreError::Full(_) | StoreError::Corrupt(_)))) => Err(e.clone()),
            _ => Ok(()),
        };
        self.result = result;
        io
    }

    fn finish(self: Box<Self>, failure: Option<&StoreError>) {
        let result = match (failure, self.result) {
            // A caller error stands even if the group failed: the op wrote nothing.
            (_, Some(Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_) | StoreError::Quota(_))))) => Err(e),
            (Some(f), _) => Err(f.clone()),
            (None, Some(r)) => r,
            (None, None) => Err(StoreError::Failed("write was never run".to_owned())),
        };
        let _ = self.reply.try_send(result);
    }
}

/// The handle requests use to reach the writer thread (shared behind the store's `Arc`).
pub(super) struct Writer {
    jobs: async_channel::Sender<Box<dyn Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Dropping the last handle finishes the queued writes and joins the thread, which holds the
/// database: once the store is gone, the file is closed and can be opened again at once.
impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.close();
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Writer {
    pub fn start(db: Arc<Shared>) -> Result<Writer, StoreError> {
        let (jobs, queue) = async_channel::unbounded::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("memgate-writer".to_owned())
            .spawn(move || run(&db, &queue))
            .map_err(|e| StoreError::Failed(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            jobs,
            thread: Some(thread),
        })
    }

    fn job<T, F>(op: F) -> (Box<dyn Job>, async_channel::Receiver<Result<T, StoreError>>)
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = async_channel::bounded(1);
        let job = Box::new(Op {
            op: Some(op),
            result: None,
            reply,
        });
        (job, rx)
    }

    /// Runs `op` in the next group and resolves once that group is durable.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (job, rx) = Self::job(op);
        self.jobs.send(job).await.map_err(|_| gone())?;
        rx.recv().await.map_err(|_| gone())?
    }

    /// [`Writer::write`] for callers outside the executor (the CLI, the admin socket).
    pub fn write_blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (job, rx) = Self::job(op);
        self.jobs.send_blocking(job).map_err(|_| gone())?;
        rx.recv_blocking().map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Failed("the database writer has stopped".to_owned())
}

fn run(db: &Shared, queue: &async_channel::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv_blocking() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let failure = commit_group(db, &mut group).err();
        if let Some(e) = &failure {
            log::error!("a write failed and was rolled back: {e}");
        }
        let io = failure.as_ref().filter(|e| !matches!(e, StoreError::Corrupt(_)));
        db.wrote(io);
        if io.is_some() {
            // Before the callers hear of it: a caller that retries at once must not read
            // through the failed handle.
            db.close();
        }
        for job in group {
            job.finish(failure.as_ref());
        }
        if io.is_some() {
            // On failure the store is dead and says so (`Store::dead`); writes fail from then on.
            let _ = db.reopen();
        }
    }
}

fn commit_group(db: &Shared, group: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
    let tx = db
        .current()?
        .begin_write()
        .map_err(|e| super::failed("begin a write")(e.into()))?;
    for job in group.iter_mut() {
        // On error, dropping the transaction aborts it: nothing of this group reaches the file.
        job.run(&tx)?;
    }
    tx.commit().map_err(|e| super::failed("commit")(e.into()))
}

/// `/healthz`'s probe of a store that failed to write: a write of a few pages, as a small
/// exchange makes. It replaces the previous probe's value, so it takes no room over time.
pub(super) fn probe(tx: &WriteTransaction) -> Result<(), StoreError> {
    const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("write_probe");
    let mut table = tx
        .open_table(PROBE)
        .map_err(|e| super::failed("open write_probe")(e.into()))?;
    table
        .insert("probe", [0u8; 16 << 10].as_slice())
        .map_err(|e| super::failed("write the probe")(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreError};
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<&str, u64> = TableDefinition::new("writer_test");

    #[test]
    fn a_corrupt_record_fails_its_group_but_neither_reopens_nor_marks_the_store_failing() {
        let dir = std::env::temp_dir().join(format!("memgate-writer-corrupt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        // An op that wrote, then met a record it cannot decode.
        let res = store.write_blocking(|tx| {
            tx.open_table(T).unwrap().insert("half", 1).unwrap();
            Err::<(), _>(StoreError::Corrupt("corrupt thread record: test".to_owned()))
        });
        assert!(matches!(res, Err(StoreError::Corrupt(_))), "{res:?}");
        // Rolled back whole, the store healthy, the next write commits on the same handle.
        assert!(smol::block_on(store.health()).is_ok());
        let before = store.db().unwrap();
        store
            .write_blocking(|tx| {
                tx.open_table(T).unwrap().insert("next", 2).unwrap();
                Ok(())
            })
            .unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&before, &store.db().unwrap()),
            "the store was reopened"
        );
        let read = store.db().unwrap().begin_read().unwrap();
        let table = read.open_table(T).unwrap();
        assert!(table.get("half").unwrap().is_none());
        assert_eq!(table.get("next").unwrap().map(|v| v.value()), Some(2));
        drop((table, read, before, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
