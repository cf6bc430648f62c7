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
mod schema;
pub mod threads;
pub mod usage;
mod writer;

pub use keys::{KeyRecord, KEY_PREFIX, OPEN_NAME, OPEN_TENANT};
pub use observations::{Generation, ObservationRecord, Scope};
pub use threads::{NewMessage, StoredMessage, ThreadRecord};

use redb::{Database, DatabaseError, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// redb's page cache, which holds the pages written and read until it is full: the process's
/// memory grows with the database up to this much and then stays flat (measured by
/// bench/soak.sh). redb's default, 1 GiB, is no bound on an edge box; what falls out of the cache
/// is still in the OS page cache.
const CACHE_BYTES: usize = 16 << 20;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "memgate.redb";

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// The database file, for its size.
    file: Arc<PathBuf>,
    // Declared after `db`: dropped last, it joins the writer thread, closing the file.
    writer: Arc<writer::Writer>,
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
    /// A caller error, such as a key name that already exists.
    Conflict(String),
    NotFound(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Locked(p) => write!(f, "{} is in use by another process", p.display()),
            StoreError::Failed(m) | StoreError::Conflict(m) | StoreError::NotFound(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn failed(context: &str) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Failed(format!("{context}: {e}"))
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
        let db = match Database::builder().set_cache_size(CACHE_BYTES).create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(e) => return Err(StoreError::Failed(format!("cannot open {}: {e}", path.display()))),
        };
        let db = Arc::new(db);
        let store = Store {
            writer: Arc::new(writer::Writer::start(db.clone())?),
            db,
            file: Arc::new(path.clone()),
        };
        let migrated = store.write_blocking(|tx| {
            let migrated = schema::upgrade(tx)?;
            // Every table exists from the start, so readers never meet a missing one.
            keys::init(tx)?;
            threads::init(tx)?;
            usage::init(tx)?;
            observations::init(tx)?;
            Ok(migrated)
        })?;
        if let Some(from) = migrated {
            log::info!(
                "migrated {} from schema version {from} to {}",
                path.display(),
                schema::VERSION
            );
        }
        Ok(store)
    }

    /// The database file's size in bytes (0 if it cannot be read).
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(self.file.as_path()).map_or(0, |m| m.len())
    }

    /// A snapshot to read from.
    pub fn read(&self) -> Result<Reader, StoreError> {
        Ok(Reader {
            tx: self.db.begin_read().or_fail("begin a read")?,
        })
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

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
