//! The redb database: one file, `data_dir/memgate.redb`, opened once per process.
//!
//! redb admits one process per file. The server holds it for its lifetime; a CLI command run
//! meanwhile reaches the same data through the server's admin socket (see `admin`).
//!
//! Writes are few here (key management) and go through `smol::unblock`: a commit fsyncs, which
//! must not stall an executor thread. Reads are MVCC snapshots, a few microseconds, done inline.

mod keys;

pub use keys::{KeyRecord, KEY_PREFIX};

use redb::{Database, DatabaseError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "memgate.redb";

/// A handle to the open database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// Why the database could not be used.
#[derive(Debug)]
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
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path)),
            Err(e) => return Err(StoreError::Failed(format!("cannot open {}: {e}", path.display()))),
        };
        let store = Store { db: Arc::new(db) };
        store.init_tables()?;
        Ok(store)
    }

    /// Creates every table so readers never meet a missing one.
    fn init_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| failed("begin")(e.into()))?;
        keys::init(&tx)?;
        tx.commit().map_err(|e| failed("commit")(e.into()))
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
