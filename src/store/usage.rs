//! Usage counts: requests and tokens per hour × key × provider × model × `user` × tags.
//!
//! Invariant: a row's key is `HOUR␟KEY␟PROVIDER␟MODEL␟USER␟TAGS` with HOUR zero-padded to ten
//! digits, so rows sort by time and a time range is one range scan. The separator (U+001F) is
//! removed from every field before it is written, so the fields always split back apart. Values
//! are six little-endian u64 counters (rows of older versions hold the first five; the sixth
//! reads as 0); writes add to them.

use super::{OrFail, Reader, StoreError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
const SEP: char = '\u{1f}';

/// What one row counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsageKey {
    /// Hours since the epoch.
    pub hour: u64,
    /// The gateway key's tenant id (see `store::keys`); reports show the key's name.
    pub key: String,
    pub provider: String,
    pub model: String,
    /// The request's `user` field.
    pub user: String,
    /// The request's `tags`, sorted and comma-joined.
    pub tags: String,
}

/// The counters of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Tokens memory's observer and reflector spent, counted apart from the requests'.
    pub memory_tokens: u64,
    /// The part of `total_tokens` memgate estimated because the upstream reported no usage.
    pub estimated_tokens: u64,
}

impl Counts {
    fn fields(&self) -> [u64; 6] {
        [
            self.requests,
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.memory_tokens,
            self.estimated_tokens,
        ]
    }

    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
        self.memory_tokens = self.memory_tokens.saturating_add(other.memory_tokens);
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
    }

    fn encode(&self) -> Vec<u8> {
        self.fields().iter().flat_map(|n| n.to_le_bytes()).collect()
    }

    fn decode(b: &[u8]) -> Counts {
        let n = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        Counts {
            requests: n(0),
            prompt_tokens: n(1),
            completion_tokens: n(2),
            total_tokens: n(3),
            memory_tokens: n(4),
            // Rows written before estimates were counted hold five counters.
            estimated_tokens: n(5),
        }
    }
}

impl UsageKey {
    fn encode(&self) -> String {
        let clean = |s: &str| s.replace(SEP, "");
        format!(
            "{:010}{SEP}{}{SEP}{}{SEP}{}{SEP}{}{SEP}{}",
            self.hour,
            clean(&self.key),
            clean(&self.provider),
            clean(&self.model),
            clean(&self.user),
            clean(&self.tags)
        )
    }

    fn decode(s: &str) -> Option<UsageKey> {
        let mut f = s.split(SEP);
        Some(UsageKey {
            hour: f.next()?.parse().ok()?,
            key: f.next()?.to_owned(),
            provider: f.next()?.to_owned(),
            model: f.next()?.to_owned(),
            user: f.next()?.to_owned(),
            tags: f.next()?.to_owned(),
        })
    }
}

pub(super) fn init(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(USAGE).or_fail("open usage")?;
    Ok(())
}

/// Adds each row's counts to what is stored.
pub fn add(tx: &WriteTransaction, rows: &[(UsageKey, Counts)]) -> Result<(), StoreError> {
    let mut table = tx.open_table(USAGE).or_fail("open usage")?;
    for (key, counts) in rows {
        let k = key.encode();
        let mut sum = table
            .get(k.as_str())
            .or_fail("read usage")?
            .map_or_else(Counts::default, |v| Counts::decode(v.value()));
        sum.add(counts);
        table
            .insert(k.as_str(), sum.encode().as_slice())
            .or_fail("write usage")?;
    }
    Ok(())
}

/// Schema 0 → 1: rows are filed under the key's tenant id instead of its name.
pub(super) fn migrate_v0(tx: &WriteTransaction, tenants: &mut super::keys::Tenants) -> Result<(), StoreError> {
    let mut rows = Vec::new();
    for entry in tx
        .open_table(USAGE)
        .or_fail("open usage")?
        .iter()
        .or_fail("scan usage")?
    {
        let (k, v) = entry.or_fail("scan usage")?;
        // An unreadable row stays as it is (reports skip it, as before).
        if let Some(key) = UsageKey::decode(k.value()) {
            rows.push((k.value().to_owned(), key, Counts::decode(v.value())));
        }
    }
    let mut table = tx.open_table(USAGE).or_fail("open usage")?;
    for (old, _, _) in &rows {
        table.remove(old.as_str()).or_fail("clear usage")?;
    }
    drop(table);
    let mut moved = Vec::with_capacity(rows.len());
    for (_, mut key, counts) in rows {
        key.key = tenants.of(tx, &key.key)?;
        moved.push((key, counts));
    }
    add(tx, &moved)
}

impl Reader {
    /// Rows of the hours `from..to` (hours since the epoch), in key order.
    pub fn usage(&self, from: u64, to: u64) -> Result<Vec<(UsageKey, Counts)>, StoreError> {
        let table = self.tx.open_table(USAGE).or_fail("open usage")?;
        let (lo, hi) = (format!("{from:010}"), format!("{to:010}"));
        let mut out = Vec::new();
        for row in table.range(lo.as_str()..hi.as_str()).or_fail("scan usage")? {
            let (k, v) = row.or_fail("read usage")?;
            if let Some(key) = UsageKey::decode(k.value()) {
                out.push((key, Counts::decode(v.value())));
            }
        }
        Ok(out)
    }
}
