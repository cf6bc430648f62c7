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
        migrate_v0(tx).map_err(|e| {
            StoreError::Failed(format!(
                "cannot migrate the database from schema version 0 to {VERSION}; it is left as it was: {e}"
            ))
        })?;
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
    use crate::store::{Scope, Store, DB_FILE};
    use redb::{Database, ReadableDatabase, ReadableTableMetadata};

    const V0_THREADS: TableDefinition<&str, &str> = TableDefinition::new("threads");
    const V0_OBSERVATIONS: TableDefinition<&str, &str> = TableDefinition::new("observations");
    const V0_HISTORY: TableDefinition<(&str, u32), &str> = TableDefinition::new("observation_history");

    /// A copy of the database the previous version wrote (fixtures/db), changed by `edit`.
    fn v0_copy(name: &str, edit: impl FnOnce(&redb::WriteTransaction)) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("memgate-v0-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/db/v0-3fa8666.redb");
        std::fs::copy(fixture, dir.join(DB_FILE)).unwrap();
        let db = Database::open(dir.join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        edit(&tx);
        tx.commit().unwrap();
        dir
    }

    #[test]
    fn a_migration_that_fails_leaves_the_old_database_as_it_was() {
        let dir = v0_copy("atomic", |tx| {
            // Sorted after the good threads, so the migration has done part of its work.
            tx.open_table(V0_THREADS).unwrap().insert("zzz", "{not json").unwrap();
        });
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("left as it was: corrupt thread record"), "{e}");
        let db = Database::open(dir.join(DB_FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        assert!(
            tx.list_tables().unwrap().all(|t| t.name() != "meta"),
            "no version recorded"
        );
        assert_eq!(
            tx.open_table(V0_THREADS).unwrap().len().unwrap(),
            7,
            "v0 threads untouched"
        );
        drop((tx, db));
        let db = Database::open(dir.join(DB_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(V0_THREADS).unwrap().remove("zzz").unwrap();
        tx.commit().unwrap();
        drop(db);
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.read().unwrap().threads(None, None).unwrap().len(), 6);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn resource_observations_follow_their_tenant_and_orphans_are_dropped() {
        let dir = v0_copy("scopes", |tx| {
            let mut obs = tx.open_table(V0_OBSERVATIONS).unwrap();
            obs.insert(
                "resource\0alice\0alex",
                r#"{"text":"* shared","tokens":2,"generation":1,"created_at":1,"updated_at":1}"#,
            )
            .unwrap();
            obs.insert(
                "thread\0gone",
                r#"{"text":"* stub","tokens":2,"generation":0,"created_at":1,"updated_at":1}"#,
            )
            .unwrap();
            tx.open_table(V0_HISTORY)
                .unwrap()
                .insert(
                    ("resource\0alice\0alex", 0),
                    r#"{"generation":0,"text":"old","tokens":1,"created_at":1,"replaced_at":1}"#,
                )
                .unwrap();
        });
        let store = Store::open(&dir).unwrap();
        let r = store.read().unwrap();
        let alice = r.resolve_tenant("alice").unwrap().unwrap();
        assert!(alice.starts_with("t_") && alice.len() == 34, "{alice}");
        let shared = Scope::Resource {
            tenant: &alice,
            resource: "alex",
        }
        .key();
        assert_eq!(r.observations(&shared).unwrap().unwrap().text, "* shared");
        assert_eq!(r.history(&shared).unwrap().len(), 1);
        let thread = Scope::Thread {
            tenant: &alice,
            id: "shared-id",
        }
        .key();
        assert!(r.observations(&thread).unwrap().unwrap().text.contains("Alex"));
        assert_ne!(Some(alice), r.resolve_tenant("bob").unwrap());
        drop((r, store));
        // The stub of a deleted thread went; what is left is the fixture's one thread record and
        // the shared one.
        let db = Database::open(dir.join(DB_FILE)).unwrap();
        let tx = db.begin_read().unwrap();
        let keys: Vec<String> = tx
            .open_table(V0_OBSERVATIONS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_owned())
            .collect();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.iter().all(|k| !k.contains("gone")), "{keys:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
