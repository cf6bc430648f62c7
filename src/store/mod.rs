//! The redb database: one file, `data_dir/memgate.redb`, opened once per process.
//!
//! redb admits one process per file. The server holds it for its lifetime; a CLI command run
//! meanwhile reaches the same data through the server's admin socket (see `admin`).
//!
//! Memory writes go through one writer thread that commits in groups (see `writer`); key
//! management, rare, commits from `smol::unblock`. Either way no executor thread waits on an
//! fsync. Reads are MVCC snapshots, a few microseconds, done inline through a [`Reader`].

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
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// redb's page cache, which holds the pages written and read until it is full: the process's
/// memory grows with the database up to this much and then stays flat (measured by
/// bench/soak.sh). redb's default, 1 GiB, is no bound on an edge box; what falls out of the cache
/// is still in the OS page cache.
const CACHE_BYTES: usize = 16 << 20;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "memgate.redb";

/// How long a reopen waits for the last read snapshots of the old handle to end (they hold
/// the file's lock); reads take microseconds, so this only bounds a stuck reader.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

/// How often a store that failed to write is probed again from `/healthz`.
const PROBE_EVERY: Duration = Duration::from_secs(1);

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
    /// Held for writing only while the writer swaps the handle; readers wait that long.
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    /// Why writes fail, from the last failed commit until one succeeds.
    failing: Mutex<Option<(String, Instant)>>,
    /// `[limits] max_stored_bytes_per_key`; 0 is none.
    quota: AtomicU64,
    /// The file had to be repaired when it was opened (it was not closed cleanly).
    repaired: Arc<AtomicBool>,
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
/// holds it. Sets `repaired` if the file was not closed cleanly and had to be repaired.
fn open_db(path: &Path, create: bool, repaired: &Arc<AtomicBool>) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    let shown = path.display().to_string();
    let (last, flag) = (Mutex::new(None), repaired.clone());
    // A file not closed cleanly (kill -9, power loss) is walked whole before it opens. Progress
    // is for debugging only: the CLI, which may open such a file too, keeps stderr clean.
    builder.set_cache_size(CACHE_BYTES).set_repair_callback(move |session| {
        flag.store(true, Ordering::Relaxed);
        log::debug!("repairing {shown}: {:.0}%", session.progress() * 100.0);
        crate::notify::extend_timeout(&last);
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
    /// The current handle. Blocks while the writer swaps it (a reopen takes milliseconds).
    fn current(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Failed("the database is closed after a failed reopen".to_owned()))
    }

    /// Closes the handle a failed commit left unusable and opens the file again, which
    /// recovers it to its last commit (redb's repair). Runs on the writer thread once the
    /// failed group's callers have their error. Err: the file could not be opened again.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        drop(slot.take());
        // Read snapshots still running on the old handle hold the file's lock a moment longer.
        let until = Instant::now() + REOPEN_WAIT;
        loop {
            // Never `create`: a file that vanished must not come back empty.
            match open_db(&self.path, false, &self.repaired) {
                Ok(db) => {
                    *slot = Some(Arc::new(db));
                    log::warn!("database {} reopened after a failed write", self.path.display());
                    return Ok(());
                }
                Err(StoreError::Locked(_)) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(e),
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
            Some(e) => *failing = Some((format!("the database cannot write: {e}"), Instant::now())),
        }
    }
}

impl Store {
    /// Opens (creating if needed) `dir/memgate.redb`; the directory is created private (0700).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
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
            db: RwLock::new(Some(Arc::new(open_db(&path, true, &repaired)?))),
            path,
            failing: Mutex::new(None),
            quota: AtomicU64::new(0),
            repaired,
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
    /// it fails, a small probe write (at most one per [`PROBE_EVERY`]) finds out whether room
    /// came back, so a store nobody writes to does not stay unhealthy for ever.
    pub async fn health(&self) -> Result<(), String> {
        let due = {
            let failing = self.db.failing.lock().unwrap_or_else(PoisonError::into_inner);
            match &*failing {
                None => return Ok(()),
                Some((why, since)) if since.elapsed() < PROBE_EVERY => return Err(why.clone()),
                Some(_) => true,
            }
        };
        if due {
            // Its outcome lands in `failing` like any other group's.
            let _ = self.write(writer::probe).await;
        }
        match &*self.db.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            None => Ok(()),
            Some((why, _)) => Err(why.clone()),
        }
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
    pub(crate) fn db(&self) -> Arc<Database> {
        // Only `reopen` empties the slot and it exits the process when it cannot fill it again.
        self.db.current().unwrap_or_else(|e| {
            log::error!("{e}");
            std::process::exit(1)
        })
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
