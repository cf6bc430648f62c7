//! The schema version, in the `meta` table, and the migrations from older versions.
//!
//! [`upgrade`] runs at open inside the transaction that creates the tables, so a migration
//! commits whole or not at all (a crash halfway leaves the old database), and a database that
//! is current is left untouched.
//!
//! Versions: 0 (no `meta` table; up to commit 3fa8666): threads keyed by id alone, data filed
//! under key names. 1: every key has a tenant id; threads, messages, observations and usage are
//! filed under it.

use super::{keys, observations, threads, usage, OrFail, StoreError};
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "schema_version";
/// The version this build writes.
pub const VERSION: u64 = 1;

/// Brings the database to [`VERSION`]; returns the version it migrated from, if it did.
/// A database of a newer version is refused: this build would misread it.
pub(super) fn upgrade(tx: &WriteTransaction) -> Result<Option<u64>, StoreError> {
    let found = tx
        .open_table(META)
        .or_fail("open meta")?
        .get(VERSION_KEY)
        .or_fail("read meta")?
        .map(|v| v.value());
    let from = match found {
        Some(v) if v > VERSION => {
            return Err(StoreError::Failed(format!(
                "the database has schema version {v}, newer than this memgate knows ({VERSION}): it was \
                 written by a later memgate; run that version (or restore a backup taken before the upgrade)"
            )))
        }
        Some(v) => v,
        // Schema 0 had no meta table; a new database has no tables at all.
        None if has_table(tx, "keys")? => 0,
        None => VERSION,
    };
    if from < 1 {
        migrate_v0(tx)?;
    }
    tx.open_table(META)
        .or_fail("open meta")?
        .insert(VERSION_KEY, VERSION)
        .or_fail("write meta")?;
    Ok((from < VERSION).then_some(from))
}

fn has_table(tx: &WriteTransaction, name: &str) -> Result<bool, StoreError> {
    Ok(tx.list_tables().or_fail("list tables")?.any(|t| t.name() == name))
}

fn migrate_v0(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut tenants = keys::migrate_v0(tx)?;
    let owner = threads::migrate_v0(tx, &mut tenants)?;
    observations::migrate_v0(tx, &mut tenants, &owner)?;
    usage::migrate_v0(tx, &mut tenants)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_database_of_a_newer_schema_is_refused_and_left_alone() {
        let dir = std::env::temp_dir().join(format!("memgate-schema-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        store
            .write_blocking(|tx| {
                tx.open_table(META)
                    .or_fail("open meta")?
                    .insert(VERSION_KEY, VERSION + 1)
                    .or_fail("write meta")?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("schema version 2, newer than this memgate knows (1)"), "{e}");
        // Refused again: the failed open changed nothing.
        assert!(Store::open(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
