//! The redb database: one file, `data_dir/memgate.redb`, opened once per process.
//!
//! redb admits one process per file. The server holds it for its lifetime; a CLI command run
//! meanwhile reaches the same data through the server's admin socket (see `admin`).
//!
//! Every write goes through one writer thread that commits in groups (see `writer`), so no
//! executor thread waits on an fsync and a failed commit is handled in one place. Reads are MVCC snapshots, a few microseconds, done inline through a [`Reader`].

mod keys;
pub mod observations;
pub mod quota;
mod schema;
pub mod threads;
pub mod usage;
mod writer;

pub use keys::{KeyRecord, KEY_PREFIX, OPEN_NAME, OPEN_TENANT};
pub use observations::{Generation, ObservationRecord, Scope};
pub use threads::{NewMessage, StoredMessage, ThreadRecord};

use redb::{Database, DatabaseError, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// redb's page cache, which holds the pages written and read until it is full: the process's
/// memory grows with the database up to this much and then stays flat (measured by
/// bench/soak.sh). redb's default, 1 GiB, is no bound on an edge box; what falls out of the cache
/// is still in the OS page cache.
const CACHE_BYTES: usize = 16 << 20;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "memgate.redb";

/// How long a read waits for a reopen before it gets an error instead.
const REOPEN_READ_WAIT: Duration = Duration::from_millis(100);

/// How long a reopen waits for the last read snapshots of the old handle to end (they hold
/// the file's lock); reads take microseconds, so this only bounds a stuck reader.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// How soon a store that failed to write is first probed again from `/healthz`; each probe
/// that fails doubles the wait, up to [`PROBE_MAX`]. A failed probe means a reopen, which
/// walks the whole file (redb's repair), so a supervisor polling `/healthz` must not drive
/// one every second.
const PROBE_FIRST: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Shared>,
    // Declared after `db`: dropped last, it joins the writer thread, closing the file.
    writer: Arc<writer::Writer>,
}

/// The open database and what is known about its health, shared by readers and the writer.
///
/// After a failed commit redb refuses every write (`PreviousIo`) until the file is opened
/// again, so the writer thread swaps a fresh handle in here (see [`Shared::reopen`]).
pub(crate) struct Shared {
    /// Empty while the writer reopens the file (and for good if it cannot). Readers wait for it
    /// at most [`REOPEN_READ_WAIT`], then get an error: a small file is back within that, and
    /// a large one's repair must not hold executor threads.
    db: Mutex<Option<Arc<Database>>>,
    /// Signalled when the writer puts a handle back.
    reopened: Condvar,
    path: PathBuf,
    /// Why writes fail, from the last failed commit until one succeeds.
    failing: Mutex<Option<Failing>>,
    /// Closed when the file cannot be opened again: the server then shuts down and exits
    /// non-zero, so a supervisor restarts it.
    dead: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// `[limits] max_stored_bytes_per_key`; 0 is none.
    quota: AtomicU64,
    /// The file had to be repaired when it was opened (it was not closed cleanly).
    repaired: Arc<AtomicBool>,
    /// Told while a repair runs (see [`Store::open_reporting`]).
    on_repair: fn(),
}

/// A store that cannot write: why, since when, and how many probes have failed since.
struct Failing {
    why: String,
    since: Instant,
    probes: u32,
}

impl Failing {
    fn probe_due(&self) -> bool {
        let wait = PROBE_FIRST.saturating_mul(1 << self.probes.min(5)).min(PROBE_MAX);
        self.since.elapsed() >= wait
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Why the database could not be used.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// Another process (normally the running server) holds the file.
    Locked(PathBuf),
    /// Anything else from redb or the file system, with context.
    Failed(String),
    /// A write failed for want of space (disk full, file size limit): nothing of it was kept.
    Full(String),
    /// A stored record that does not decode (a damaged or foreign file). The op fails and its
    /// group is rolled back, but the database itself is sound: no reopen, `/healthz` stays 200.
    Corrupt(String),
    /// A caller error: the write would pass the tenant's quota of stored bytes.
    Quota(String),
    /// A caller error, such as a key name that already exists.
    Conflict(String),
    NotFound(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked(p) => write!(f, "{} is in use by another process", p.display()),
            StoreError::Failed(m)
            | StoreError::Corrupt(m)
            | StoreError::Full(m)
            | StoreError::Quota(m)
            | StoreError::Conflict(m)
            | StoreError::NotFound(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn failed(context: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| {
        let full = matches!(&e, redb::Error::Io(io) if out_of_space(io.kind()));
        let message = format!("{context}: {e}");
        if full {
            StoreError::Full(message)
        } else {
            StoreError::Failed(message)
        }
    }
}

/// Whether an I/O error means "no room": more room later lets the same write succeed.
fn out_of_space(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    matches!(kind, StorageFull | FileTooLarge | QuotaExceeded)
}

/// Turns any redb error into [`StoreError::Failed`] saying what was being done.
pub(crate) trait OrFail<T> {
    fn or_fail(self, context: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> OrFail<T> for Result<T, E> {
    fn or_fail(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|e| failed(context)(e.into()))
    }
}

/// A consistent snapshot of the database; readers never wait for the writer.
pub struct Reader {
    tx: ReadTransaction,
}

/// Opens the file with our settings (creating it if `create`); `Locked` when another handle
/// holds it. Sets `repaired` if the file was not closed cleanly and had to be repaired, and
/// calls `on_repair` at most once a second while it is.
fn open_db(path: &Path, create: bool, repaired: &Arc<AtomicBool>, on_repair: fn()) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    let shown = path.display().to_string();
    let (last, flag) = (Mutex::new(None::<Instant>), repaired.clone());
    // A file not closed cleanly (kill -9, power loss) is walked whole before it opens. Progress
    // is for debugging only: the CLI, which may open such a file too, keeps stderr clean.
    builder.set_cache_size(CACHE_BYTES).set_repair_callback(move |session| {
        flag.store(true, Ordering::Relaxed);
        log::debug!("repairing {shown}: {:.0}%", session.progress() * 100.0);
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        if !last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            *last = Some(Instant::now());
            on_repair();
        }
    });
    let opened = if create {
        builder.create(path)
    } else {
        builder.open(path)
    };
    match opened {
        Ok(db) => Ok(db),
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Locked(path.to_owned())),
        Err(e) => Err(StoreError::Failed(format!("cannot open {}: {e}", path.display()))),
    }
}

impl Shared {
    /// The current handle; while the writer reopens the file, waits up to
    /// [`REOPEN_READ_WAIT`] for it, then fails.
    fn current(&self) -> Result<Arc<Database>, StoreError> {
        let slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let (slot, _) = self
            .reopened
            .wait_timeout_while(slot, REOPEN_READ_WAIT, |db| db.is_none() && !self.dead.0.is_closed())
            .unwrap_or_else(PoisonError::into_inner);
        slot.clone().ok_or_else(|| {
            StoreError::Failed("the database is not open: it is being reopened after a failed write".to_owned())
        })
    }

    /// Takes away the handle a failed commit left unusable (redb answers every use of it with
    /// `PreviousIo`): readers from now on wait for [`Shared::reopen`] instead.
    pub(crate) fn close(&self) {
        drop(self.db.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Opens the file again after [`Shared::close`], which recovers it to its last commit
    /// (redb's repair). Runs on the writer thread once the failed group's callers have their
    /// error; the lock is held only to swap, never while the file is opened. Err: the file
    /// could not be opened again (the store is then dead).
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        // Read snapshots still running on the old handle hold the file's lock a moment longer.
        let until = Instant::now() + REOPEN_WAIT;
        loop {
            // Never `create`: a file that vanished must not come back empty.
            match open_db(&self.path, false, &self.repaired, self.on_repair) {
                Ok(db) => {
                    *self.db.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(db));
                    self.reopened.notify_all();
                    log::warn!("database {} reopened after a failed write", self.path.display());
                    return Ok(());
                }
                Err(StoreError::Locked(_)) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    // Logged before the server hears of it: it exits soon after.
                    log::error!(
                        "cannot reopen the database after a failed write ({e}); shutting down so the service restarts"
                    );
                    self.dead.0.close();
                    self.reopened.notify_all();
                    return Err(e);
                }
            }
        }
    }

    /// Records a group's outcome for `/healthz`.
    pub(crate) fn wrote(&self, outcome: Option<&StoreError>) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            None => {
                if failing.take().is_some() {
                    log::info!("the database accepts writes again");
                }
            }
            Some(e) => {
                let probes = failing.as_ref().map_or(0, |f| f.probes + 1);
                *failing = Some(Failing {
                    why: format!("the database cannot write: {e}"),
                    since: Instant::now(),
                    probes,
                });
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) `dir/memgate.redb`; the directory is created private (0700).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_reporting(dir, || {})
    }

    /// [`Store::open`], calling `on_repair` at most once a second while redb repairs a file that
    /// was not closed cleanly (at start, or when reopening after a failed write): a long repair
    /// can then tell a supervisor that it is making progress (systemd's `EXTEND_TIMEOUT_USEC`).
    pub fn open_reporting(dir: &Path, on_repair: fn()) -> Result<Store, StoreError> {
        create_private_dir(dir).map_err(|e| {
            StoreError::Failed(format!(
                "cannot create data_dir {}: {e}; set data_dir or --data-dir to a writable directory",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        private_file(&path)?;
        let repaired = Arc::new(AtomicBool::new(false));
        let db = Arc::new(Shared {
            db: Mutex::new(Some(Arc::new(open_db(&path, true, &repaired, on_repair)?))),
            reopened: Condvar::new(),
            path,
            failing: Mutex::new(None),
            dead: async_channel::bounded(1),
            quota: AtomicU64::new(0),
            repaired,
            on_repair,
        });
        let store = Store {
            writer: Arc::new(writer::Writer::start(db.clone())?),
            db,
        };
        let migrated = store.write_blocking(|tx| {
            let migrated = schema::upgrade(tx)?;
            // Every table exists from the start, so readers never meet a missing one.
            keys::init(tx)?;
            threads::init(tx)?;
            usage::init(tx)?;
            quota::init(tx)?;
            observations::init(tx)?;
            Ok(migrated)
        })?;
        if let Some(from) = migrated {
            log::info!(
                "migrated {} from schema version {from} to {}",
                store.db.path.display(),
                schema::VERSION
            );
        }
        Ok(store)
    }

    /// Whether the file was not closed cleanly (a crash, kill -9) and redb repaired it to its
    /// last commit when it was opened.
    pub fn repaired(&self) -> bool {
        self.db.repaired.load(Ordering::Relaxed)
    }

    /// Sets each tenant's quota of stored message bytes (`None` or 0: no quota).
    pub fn set_quota(&self, bytes: Option<u64>) {
        self.db.quota.store(bytes.unwrap_or(0), Ordering::Relaxed);
    }

    /// Each tenant's quota of stored message bytes, if there is one (see `quota`).
    pub fn quota(&self) -> Option<u64> {
        Some(self.db.quota.load(Ordering::Relaxed)).filter(|&q| q > 0)
    }

    /// The database file's size in bytes (0 if it cannot be read).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.db.path).map_or(0, |m| m.len())
    }

    /// A snapshot to read from.
    pub fn read(&self) -> Result<Reader, StoreError> {
        Ok(Reader {
            tx: self.db.current()?.begin_read().or_fail("begin a read")?,
        })
    }

    /// Whether the store can write: `Err(why)` from a failed commit until one succeeds. While
    /// it fails, a small probe write (the first after [`PROBE_FIRST`], backing off to
    /// [`PROBE_MAX`]) finds out whether room came back, so a store nobody writes to does not
    /// stay unhealthy for ever.
    pub async fn health(&self) -> Result<(), String> {
        let due = match &*self.db.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            None => return Ok(()),
            Some(f) if !f.probe_due() => return Err(f.why.clone()),
            Some(_) => true,
        };
        if due {
            // Its outcome lands in `failing` like any other group's.
            let _ = self.write(writer::probe).await;
        }
        match &*self.db.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            None => Ok(()),
            Some(f) => Err(f.why.clone()),
        }
    }

    /// Resolves if the database file cannot be opened again after a failed write: nothing can
    /// be stored from then on, and the server shuts down so that a supervisor restarts it.
    pub async fn dead(&self) {
        let _ = self.db.dead.1.recv().await;
    }

    /// Runs `op` on the writer thread; resolves once it is durable (see `writer` for the rules
    /// an op follows).
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write(op).await
    }

    /// [`Store::write`] from outside the executor.
    pub fn write_blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.writer.write_blocking(op)
    }

    /// The current handle (key management commits on it directly).
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.current()
    }
}

/// Creates `dir` 0700, or tightens an existing one to 0700 (logging the change): it holds the
/// database and the admin socket, which are for the service user alone.
#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        tighten(dir, 0o700);
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Takes group and other permissions off `path` (if it exists) and logs it when it changed
/// anything. A file we cannot chmod (not ours) is left as it is, with a warning.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let old = meta.permissions().mode() & 0o7777;
    if old & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => log::warn!("{} was mode {old:04o}; tightened to {mode:04o}", path.display()),
        Err(e) => log::warn!(
            "{} is mode {old:04o}, readable by other users, and cannot be tightened to {mode:04o}: {e}",
            path.display()
        ),
    }
}

/// Creates the database file 0600 (redb would create it with the umask's mode), or tightens
/// one an older install left 0644.
#[cfg(unix)]
fn private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        tighten(path, 0o600);
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", path.display())))
}
