//! Gateway keys. A key is shown once, at creation; only its SHA-256 is stored.
//!
//! SHA-256 without salt or stretching is enough here: keys are 192 bits of OS randomness, so
//! there is nothing to brute-force, and a lookup must stay a single hash per request.

use super::{failed, Store, StoreError};
use miniserde::{json, Deserialize, Serialize};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

/// Key name → [`KeyRecord`] as JSON. Ordered by name, so listing is a range scan.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
/// SHA-256 (hex) of a key → its name. Written together with `KEYS` in one transaction.
const KEY_HASHES: TableDefinition<&str, &str> = TableDefinition::new("key_hashes");

/// Prefix of every gateway key; lets log scrubbers and users recognise them.
pub const KEY_PREFIX: &str = "msk_";

/// What is stored about a key (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
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
    Ok(())
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
    /// Creates a key named `name` and returns it; the only time the key exists in clear.
    /// Creates a key with its own limits (`None`: the config's `[limits]` apply); returns the key.
    pub fn create_key(&self, name: &str, rpm: Option<u64>, tpm: Option<u64>) -> Result<String, StoreError> {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(StoreError::Conflict(format!(
                "key name {name:?} must be 1-64 characters of letters, digits, '-', '_', '.', '@'"
            )));
        }
        let key = new_key()?;
        let record = KeyRecord {
            name: name.to_owned(),
            hash: hash_hex(&key),
            hint: key[..KEY_PREFIX.len() + 6].to_owned(),
            created_at: now_secs(),
            revoked_at: None,
            rpm,
            tpm,
        };
        let tx = self.db().begin_write().map_err(|e| failed("begin")(e.into()))?;
        {
            let mut keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
            if let Some(old) = keys.get(name).map_err(|e| failed("read key")(e.into()))? {
                let old: Option<KeyRecord> = json::from_str(old.value()).ok();
                if old.is_some_and(|o| o.revoked_at.is_none()) {
                    return Err(StoreError::Conflict(format!(
                        "a key named {name:?} exists; revoke it first (`memgate keys revoke {name}`) or pick another name"
                    )));
                }
            }
            keys.insert(name, json::to_string(&record).as_str())
                .map_err(|e| failed("write key")(e.into()))?;
            let mut hashes = tx
                .open_table(KEY_HASHES)
                .map_err(|e| failed("open key_hashes")(e.into()))?;
            hashes
                .insert(record.hash.as_str(), name)
                .map_err(|e| failed("write key")(e.into()))?;
        }
        tx.commit().map_err(|e| failed("commit")(e.into()))?;
        Ok(key)
    }

    /// All keys, by name, revoked ones included.
    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let tx = self.db().begin_read().map_err(|e| failed("begin read")(e.into()))?;
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
        let tx = self.db().begin_write().map_err(|e| failed("begin")(e.into()))?;
        {
            let mut keys = tx.open_table(KEYS).map_err(|e| failed("open keys")(e.into()))?;
            let found = keys
                .get(name)
                .map_err(|e| failed("read key")(e.into()))?
                .map(|v| v.value().to_owned());
            let mut record: KeyRecord = found.and_then(|v| json::from_str(&v).ok()).ok_or_else(|| {
                StoreError::NotFound(format!("no key named {name:?}; `memgate keys list` shows them"))
            })?;
            if record.revoked_at.is_none() {
                record.revoked_at = Some(now_secs());
                keys.insert(name, json::to_string(&record).as_str())
                    .map_err(|e| failed("write key")(e.into()))?;
            }
        }
        tx.commit().map_err(|e| failed("commit")(e.into()))
    }

    /// The live record of `key`, or `None` if it is unknown or revoked.
    pub fn verify_key(&self, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        if !key.starts_with(KEY_PREFIX) {
            return Ok(None);
        }
        let tx = self.db().begin_read().map_err(|e| failed("begin read")(e.into()))?;
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
}
