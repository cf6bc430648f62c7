//! Gateway keys. A key is shown once, at creation; only its SHA-256 is stored.
//!
//! SHA-256 without salt or stretching is enough here: keys are 192 bits of OS randomness, so
//! there is nothing to brute-force, and a lookup must stay a single hash per request.

use super::{failed, OrFail, Reader, Store, StoreError};
use miniserde::{json, Deserialize, Serialize};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

/// Key name → [`KeyRecord`] as JSON. Ordered by name, so listing is a range scan.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
/// SHA-256 (hex) of a key → its name. Written together with `KEYS` in one transaction.
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");
/// Tenant id → the name of the key that had it, for every key ever created: a name reused after
/// revocation gets a new tenant id, and the old one stays listed here under the old name.
const TENANTS: TableDefinition<&str, &str> = TableDefinition::new("key_tenants");

/// The tenant of open mode (`[auth] mode = "none"`). Key tenants are `t_` + 32 hex digits, so
/// no key can have it.
pub const OPEN_TENANT: &str = "open";
/// The name open mode's tenant is shown and addressed by; no key may take it.
pub const OPEN_NAME: &str = "default";

/// Prefix of every gateway key; lets log scrubbers and users recognise them.
pub const KEY_PREFIX: &str = "msk_";

/// What is stored about a key (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    /// The key's tenant: its threads, observations and usage are filed under this id, never
    /// under the name, which can be reused once the key is revoked. Set at creation, never changed.
    pub tenant: String,
    pub hash: String,
    /// The first characters, so a user can tell keys apart in `keys list`.
    pub hint: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
    /// The key's own rate limits (absent: `[limits]` applies).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

pub(super) fn init(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
    tx.open_table(KEY_HASHES)
        .map_err(|e| failed("open key_hashes")(e.into()))?;
    tx.open_table(TENANTS).or_fail("open key_tenants")?;
    Ok(())
}

/// A new tenant id: `t_` and 16 bytes of OS randomness in hex.
fn new_tenant() -> Result<String, StoreError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Failed(format!("no OS randomness: {e}")))?;
    Ok(format!(
        "t_{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Schema 0 → 1: gives every key record a tenant id. Returns the tenant id of each name as
/// schema 0 filed data under it (open mode's `default` included); a name no key has (none should
/// exist) gets its own new tenant, so its data stays apart and reachable by the admin CLI.
pub(super) fn migrate_v0(tx: &WriteTransaction) -> Result<Tenants, StoreError> {
    let mut keys = tx.open_table(KEYS).or_fail("open keys")?;
    let mut records = Vec::new();
    for entry in keys.iter().or_fail("scan keys")? {
        let (k, v) = entry.or_fail("scan keys")?;
        records.push((k.value().to_owned(), v.value().to_owned()));
    }
    let mut tenants = Tenants::default();
    for (name, json) in records {
        let Ok(serde_json::Value::Object(mut record)) = serde_json::from_str(&json) else {
            log::warn!("migration: key record {name:?} is unreadable; left as it is");
            continue;
        };
        let tenant = new_tenant()?;
        record.insert("tenant".to_owned(), tenant.clone().into());
        let json = serde_json::Value::Object(record).to_string();
        keys.insert(name.as_str(), json.as_str()).or_fail("write key")?;
        tenants.0.insert(name, tenant);
    }
    drop(keys);
    let mut table = tx.open_table(TENANTS).or_fail("open key_tenants")?;
    for (name, tenant) in &tenants.0 {
        table
            .insert(tenant.as_str(), name.as_str())
            .or_fail("write key_tenants")?;
    }
    Ok(tenants)
}

/// Schema 0's tenant names and their tenant ids, during the migration.
#[derive(Default)]
pub(super) struct Tenants(std::collections::HashMap<String, String>);

impl Tenants {
    /// The tenant id of a schema 0 tenant name.
    pub(super) fn of(&mut self, tx: &WriteTransaction, name: &str) -> Result<String, StoreError> {
        if let Some(t) = self.0.get(name) {
            return Ok(t.clone());
        }
        let tenant = if name == OPEN_NAME {
            OPEN_TENANT.to_owned()
        } else {
            let t = new_tenant()?;
            tx.open_table(TENANTS)
                .or_fail("open key_tenants")?
                .insert(t.as_str(), name)
                .or_fail("write key_tenants")?;
            t
        };
        self.0.insert(name.to_owned(), tenant.clone());
        Ok(tenant)
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hash_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_key() -> Result<String, StoreError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Failed(format!("no OS randomness: {e}")))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Store {
    /// Creates a key named `name` with its own limits (`None`: the config's `[limits]` apply); returns the key.
    pub fn create_key(&self, name: &str, rpm: Option<u64>, tpm: Option<u64>) -> Result<String, StoreError> {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(StoreError::Conflict(format!(
                "key name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.', '@'"
            )));
        }
        if name == OPEN_NAME || name == OPEN_TENANT {
            return Err(StoreError::Conflict(format!(
                "the name {name:?} is open mode's tenant (no key); pick another name"
            )));
        }
        // `t_…` is how tenant ids look, and the CLI's `--tenant` takes either.
        if name.starts_with("t_") {
            return Err(StoreError::Conflict(format!(
                "key name {name:?} may not start with `t_` (tenant ids do); pick another name"
            )));
        }
        let key = new_key()?;
        let record = KeyRecord {
            name: name.to_owned(),
            tenant: new_tenant()?,
            hash: hash_hex(&key),
            hint: key[..KEY_PREFIX.len() + 6].to_owned(),
            created_at: now_secs(),
            revoked_at: None,
            rpm,
            tpm,
        };
        let name = name.to_owned();
        // Through the writer, like every write: a failed commit is handled in one place.
        self.write_blocking(move |tx| {
            let mut keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
            if let Some(old) = keys.get(name.as_str()).map_err(|e| failed("read key")(e.into()))? {
                let old: Option<KeyRecord> = json::from_str(old.value()).ok();
                if old.is_some_and(|o| o.revoked_at.is_none()) {
                    return Err(StoreError::Conflict(format!(
                        "a key named {name:?} exists; revoke it first (`memgate keys revoke {name}`) or pick another name"
                    )));
                }
            }
            keys.insert(name.as_str(), json::to_string(&record).as_str())
                .map_err(|e| failed("write key")(e.into()))?;
            let mut hashes = tx
                .open_table(KEY_HASHES)
                .map_err(|e| failed("open key_hashes")(e.into()))?;
            hashes
                .insert(record.hash.as_str(), name.as_str())
                .map_err(|e| failed("write key")(e.into()))?;
            tx.open_table(TENANTS)
                .or_fail("open key_tenants")?
                .insert(record.tenant.as_str(), name.as_str())
                .or_fail("write key_tenants")?;
            Ok(())
        })?;
        Ok(key)
    }

    /// All keys, by name, revoked ones included.
    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let tx = self.db()?.begin_read().map_err(|e| failed("begin read")(e.into()))?;
        let keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
        let mut out = Vec::new();
        for entry in keys.iter().map_err(|e| failed("scan keys")(e.into()))? {
            let (_, v) = entry.map_err(|e| failed("scan keys")(e.into()))?;
            match json::from_str::<KeyRecord>(v.value()) {
                Ok(r) => out.push(r),
                Err(_) => log::warn!("skipping an unreadable key record"),
            }
        }
        Ok(out)
    }

    /// Marks a key revoked; it stops working at once.
    pub fn revoke_key(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.write_blocking(move |tx| {
            let mut keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
            let found = keys
                .get(name.as_str())
                .map_err(|e| failed("read key")(e.into()))?
                .map(|v| v.value().to_owned());
            let mut record: KeyRecord = found.and_then(|v| json::from_str(&v).ok()).ok_or_else(|| {
                StoreError::NotFound(format!("no key named {name:?}; `memgate keys list` shows them"))
            })?;
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now_secs());
                keys.insert(name.as_str(), json::to_string(&record).as_str())
                    .map_err(|e| failed("write key")(e.into()))?;
            }
            Ok(())
        })
    }

    /// The live record of `key`, or `None` if it is unknown or revoked.
    pub fn verify_key(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        if !key.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let tx = self.db()?.begin_read().map_err(|e| failed("begin read")(e.into()))?;
        let hashes = tx
            .open_table(KEY_HASHES)
            .map_err(|e| failed("open key_hashes")(e.into()))?;
        let Some(name) = hashes
            .get(hash_hex(key).as_str())
            .map_err(|e| failed("read key")(e.into()))?
        else {
            return Ok(None);
        };
        let keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
        let Some(v) = keys.get(name.value()).map_err(|e| failed("read key")(e.into()))? else {
            return Ok(None);
        };
        let record: Option<KeyRecord> = json::from_str(v.value()).ok();
        // A name can be reused after revocation: the hash must match the current record.
        Ok(record.filter(|r| r.revoked_at.is_none() && r.hash == hash_hex(key)))
    }
}

impl Reader {
    /// The tenant id a name stands for in the admin CLI: the tenant of the key with that name
    /// (the live one, or the last one revoked), open mode's for `default`, or a tenant id itself
    /// (`t_…`, as `threads list` shows an older key's, or `open`).
    ///
    /// A tenant id wins over a key name that looks the same (new keys may not take such names,
    /// but a database from before tenant ids may hold one): the id is the only handle on a
    /// revoked key's data once its name is reused.
    pub fn resolve_tenant(&self, name: &str) -> Result<Option<String>, StoreError> {
        if name == OPEN_NAME || name == OPEN_TENANT {
            return Ok(Some(OPEN_TENANT.to_owned()));
        }
        let tenants = self.tx.open_table(TENANTS).or_fail("open key_tenants")?;
        if tenants.get(name).or_fail("read key_tenants")?.is_some() {
            return Ok(Some(name.to_owned()));
        }
        let keys = self.tx.open_table(KEYS).or_fail("open keys")?;
        let found = keys.get(name).or_fail("read key")?;
        Ok(found.and_then(|v| json::from_str::<KeyRecord>(v.value()).ok().map(|r| r.tenant)))
    }

    /// How each tenant is shown: its key's name, `NAME(revoked)` once revoked (a later key may
    /// have the name), `default` for open mode.
    pub fn tenant_labels(&self) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut labels = std::collections::HashMap::new();
        labels.insert(OPEN_TENANT.to_owned(), OPEN_NAME.to_owned());
        let tenants = self.tx.open_table(TENANTS).or_fail("open key_tenants")?;
        for entry in tenants.iter().or_fail("scan key_tenants")? {
            let (t, name) = entry.or_fail("scan key_tenants")?;
            labels.insert(t.value().to_owned(), format!("{}(revoked)", name.value()));
        }
        let keys = self.tx.open_table(KEYS).or_fail("open keys")?;
        for entry in keys.iter().or_fail("scan keys")? {
            let (_, v) = entry.or_fail("scan keys")?;
            if let Ok(r) = json::from_str::<KeyRecord>(v.value()) {
                if r.revoked_at.is_none() {
                    labels.insert(r.tenant, r.name);
                }
            }
        }
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_revocable_across_reopen() {
        let dir = std::env::temp_dir().join(format!("memgate-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let key = {
            let store = Store::open(&dir).unwrap();
            let key = store.create_key("alice", None, None).unwrap();
            assert!(key.starts_with("msk_") && key.len() >= 4 + 32);
            assert!(store.create_key("alice", None, None).is_err(), "duplicate live name");
            key
        };
        let raw = std::fs::read(dir.join(super::super::DB_FILE)).unwrap();
        assert!(
            !raw.windows(key.len()).any(|w| w == key.as_bytes()),
            "key stored in clear"
        );
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.verify_key(&key).unwrap().unwrap().name, "alice");
        assert!(store.verify_key("msk_nope").unwrap().is_none());
        store.revoke_key("alice").unwrap();
        assert!(store.verify_key(&key).unwrap().is_none());
        let again = store.create_key("alice", None, None).unwrap();
        assert!(
            store.verify_key(&key).unwrap().is_none(),
            "old key stays dead after name reuse"
        );
        assert!(store.verify_key(&again).unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_that_look_like_tenant_ids_are_refused_and_ids_resolve_first() {
        let dir = std::env::temp_dir().join(format!("memgate-keys-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        for name in ["open", "default", "t_0123456789abcdef0123456789abcdef"] {
            assert!(
                matches!(store.create_key(name, None, None), Err(StoreError::Conflict(_))),
                "{name}"
            );
        }
        store.create_key("bob", None, None).unwrap();
        let carol = store
            .verify_key(&store.create_key("carol", None, None).unwrap())
            .unwrap()
            .unwrap();
        let read = store.read().unwrap();
        assert_eq!(read.resolve_tenant("carol").unwrap(), Some(carol.tenant.clone()));
        assert_eq!(read.resolve_tenant(&carol.tenant).unwrap(), Some(carol.tenant));
        assert_eq!(read.resolve_tenant("open").unwrap().as_deref(), Some(OPEN_TENANT));
        assert_eq!(read.resolve_tenant("nobody").unwrap(), None);
        drop((read, store));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
