//! Threads and their messages: what memory keeps word for word.
//!
//! Tables (values are JSON):
//! - `tenant_threads`: (tenant, thread id) → [`ThreadRecord`]. A thread id names a thread
//!   within one tenant (gateway key): the same id under two keys is two threads.
//! - `thread_index`: (tenant, resource, thread id) → created_at; lists a tenant's threads.
//! - `tenant_messages`: (tenant, thread id, seq) → [`StoredMessage`], so a thread is one
//!   ordered range and its unobserved messages are the range from the cursor.
//!
//! Invariants: every `tenant_threads` row has exactly one `thread_index` row; a thread's seqs
//! are below its `next_seq`, which only grows; `cursor <= next_seq`; `message_count` is the
//! number of its `tenant_messages` rows.

use super::{OrFail, Reader, StoreError};
use crate::ir::Message;
use redb::{AccessGuard, ReadableTable, TableDefinition, WriteTransaction};

type IndexKey = (&'static str, &'static str, &'static str);
use serde::{Deserialize, Serialize};
use serde_json::Value;

const THREADS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tenant_threads");
const THREAD_INDEX: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("thread_index");
const MESSAGES: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("tenant_messages");
type MessageEntry<'a> = (
    AccessGuard<'a, (&'static str, &'static str, u64)>,
    AccessGuard<'a, &'static str>,
);
/// Schema 0's tables, keyed by thread id alone; [`migrate_v0`] moves them into the ones above.
const V0_THREADS: TableDefinition<&str, &str> = TableDefinition::new("threads");
const V0_MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");

/// Longest thread or resource id accepted; they are keys, not documents.
pub const MAX_ID_LEN: usize = 256;

/// A conversation, bound to one tenant and one resource for life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub id: String,
    /// The tenant id of the key that owns it (see `store::keys`).
    pub tenant: String,
    pub resource: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub metadata: Value,
    pub created_at: u64,
    pub updated_at: u64,
    /// The seq the next appended message gets.
    pub next_seq: u64,
    /// The first message not yet observed; older ones live on only as observations.
    pub cursor: u64,
    pub message_count: u64,
    /// Per-thread thresholds set through the API; `None` means the config's.
    #[serde(default)]
    pub message_tokens: Option<u64>,
    #[serde(default)]
    pub observation_tokens: Option<u64>,
}

impl ThreadRecord {
    /// A new, empty thread.
    pub fn new(id: &str, tenant: &str, resource: &str, now: u64) -> ThreadRecord {
        ThreadRecord {
            id: id.to_owned(),
            tenant: tenant.to_owned(),
            resource: resource.to_owned(),
            title: None,
            metadata: Value::Object(Default::default()),
            created_at: now,
            updated_at: now,
            next_seq: 0,
            cursor: 0,
            message_count: 0,
            message_tokens: None,
            observation_tokens: None,
        }
    }

    /// The key of its row in `tenant_threads`.
    fn key(&self) -> (&str, &str) {
        (self.tenant.as_str(), self.id.as_str())
    }

    /// The range of its messages from `seq` on.
    fn messages(&self, seq: u64) -> std::ops::RangeInclusive<(&str, &str, u64)> {
        (self.tenant.as_str(), self.id.as_str(), seq)..=(self.tenant.as_str(), self.id.as_str(), u64::MAX)
    }
}

/// One stored message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    pub seq: u64,
    /// As the model saw it: role, content (text or parts), tool calls, tool call id.
    pub message: Message,
    /// The local estimate (see `ir::tokens`).
    pub tokens: u64,
    pub created_at: u64,
    /// An answer cut short (the client left or the upstream broke off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// A message to append; its id and seq (and its time, unless it brings one) are given by [`append`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message: Message,
    pub tokens: u64,
    pub incomplete: bool,
    /// When it was said, if not now: history imported through the Memory API (`createdAt`).
    pub created_at: Option<u64>,
}

/// Checks that a client-supplied thread or resource id can be a key.
///
/// Ids travel in URL paths (`/v1/memory/threads/{id}`), so a `.` or `..` segment is refused too:
/// URL parsers and proxies collapse dot segments, and the id would name another thread there.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    let dots = id.split('/').any(|s| s == "." || s == "..");
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) || dots {
        return Err(format!(
            "{what} must be 1-{MAX_ID_LEN} bytes without control characters or `.`/`..` path segments"
        ));
    }
    Ok(())
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("thread {id:?} not found"))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("corrupt {what} record: {e}")))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(super) fn init(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(THREADS).or_fail("open threads")?;
    tx.open_table(THREAD_INDEX).or_fail("open thread_index")?;
    tx.open_table(MESSAGES).or_fail("open messages")?;
    Ok(())
}

/// The tenant's thread `id` as the writer sees it.
pub fn get(tx: &WriteTransaction, tenant: &str, id: &str) -> Result<Option<ThreadRecord>, StoreError> {
    let threads = tx.open_table(THREADS).or_fail("open threads")?;
    let found = threads.get((tenant, id)).or_fail("read thread")?;
    found.map(|v| decode("thread", v.value())).transpose()
}

/// The tenant's thread `id`, else [`StoreError::NotFound`].
pub fn owned(tx: &WriteTransaction, tenant: &str, id: &str) -> Result<ThreadRecord, StoreError> {
    get(tx, tenant, id)?.ok_or_else(|| not_found(id))
}

fn put(tx: &WriteTransaction, record: &ThreadRecord) -> Result<(), StoreError> {
    let mut threads = tx.open_table(THREADS).or_fail("open threads")?;
    threads
        .insert(record.key(), encode(record).as_str())
        .or_fail("write thread")?;
    Ok(())
}

/// Creates a thread; an id the tenant already has is a conflict (other tenants' ids are theirs).
pub fn create(tx: &WriteTransaction, record: &ThreadRecord) -> Result<(), StoreError> {
    if get(tx, &record.tenant, &record.id)?.is_some() {
        return Err(StoreError::Conflict(format!("thread {:?} already exists", record.id)));
    }
    put(tx, record)?;
    let mut index = tx.open_table(THREAD_INDEX).or_fail("open thread_index")?;
    index
        .insert(
            (record.tenant.as_str(), record.resource.as_str(), record.id.as_str()),
            record.created_at,
        )
        .or_fail("index thread")?;
    Ok(())
}

/// The thread `id` of this tenant and resource, created if new. The tenant's thread of that id
/// bound to another resource is reported as not found.
pub fn bind(
    tx: &WriteTransaction,
    id: &str,
    tenant: &str,
    resource: &str,
    now: u64,
) -> Result<ThreadRecord, StoreError> {
    if let Some(t) = get(tx, tenant, id)? {
        return if t.resource == resource {
            Ok(t)
        } else {
            Err(not_found(id))
        };
    }
    let record = ThreadRecord::new(id, tenant, resource, now);
    create(tx, &record)?;
    Ok(record)
}

/// Threads of `tenant` (all tenants for `None`) and one resource, as the writer sees them: an
/// erase finds every thread committed before it, however recent.
pub fn of_resource(
    tx: &WriteTransaction,
    tenant: Option<&str>,
    resource: &str,
) -> Result<Vec<ThreadRecord>, StoreError> {
    let keys = indexed(
        &tx.open_table(THREAD_INDEX).or_fail("open thread_index")?,
        tenant,
        Some(resource),
    )?;
    let mut out = Vec::with_capacity(keys.len());
    for (t, id) in keys {
        out.extend(get(tx, &t, &id)?);
    }
    Ok(out)
}

/// (tenant, thread id) of the index rows of `tenant` (all for `None`) and `resource` (all for
/// `None`).
fn indexed(
    index: &impl ReadableTable<IndexKey, u64>,
    tenant: Option<&str>,
    resource: Option<&str>,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut keys = Vec::new();
    let start = (tenant.unwrap_or(""), resource.unwrap_or(""), "");
    for entry in index.range(start..).or_fail("read thread_index")? {
        let (k, _) = entry.or_fail("read thread_index")?;
        let (t, r, id) = k.value();
        if tenant.is_some_and(|want| want != t) {
            break;
        }
        if resource.is_some_and(|want| want != r) {
            if tenant.is_some() {
                break;
            }
            continue;
        }
        keys.push((t.to_owned(), id.to_owned()));
    }
    Ok(keys)
}

/// Saves a changed thread record (title, metadata, thresholds, cursor).
pub fn update(tx: &WriteTransaction, record: &ThreadRecord) -> Result<(), StoreError> {
    put(tx, record)
}

/// Appends messages to a thread in order; all or none.
pub fn append(
    tx: &WriteTransaction,
    thread: &mut ThreadRecord,
    new: Vec<NewMessage>,
    now: u64,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut stored = Vec::with_capacity(new.len());
    {
        let mut messages = tx.open_table(MESSAGES).or_fail("open messages")?;
        for m in new {
            let record = StoredMessage {
                id: new_message_id(),
                seq: thread.next_seq,
                message: m.message,
                tokens: m.tokens,
                created_at: m.created_at.unwrap_or(now),
                incomplete: m.incomplete,
            };
            messages
                .insert(
                    (thread.tenant.as_str(), thread.id.as_str(), record.seq),
                    encode(&record).as_str(),
                )
                .or_fail("write message")?;
            thread.next_seq += 1;
            thread.message_count += 1;
            stored.push(record);
        }
    }
    thread.updated_at = now;
    put(tx, thread)?;
    Ok(stored)
}

/// Deletes the given messages of a thread; returns how many existed.
pub fn delete_messages(tx: &WriteTransaction, thread: &mut ThreadRecord, ids: &[String]) -> Result<u64, StoreError> {
    let mut messages = tx.open_table(MESSAGES).or_fail("open messages")?;
    let mut doomed = Vec::new();
    for entry in messages.range(thread.messages(0)).or_fail("read messages")? {
        let (k, v) = entry.or_fail("read message")?;
        let m: StoredMessage = decode("message", v.value())?;
        if ids.contains(&m.id) {
            doomed.push(k.value().2);
        }
    }
    for seq in &doomed {
        messages
            .remove((thread.tenant.as_str(), thread.id.as_str(), *seq))
            .or_fail("delete message")?;
    }
    drop(messages);
    thread.message_count = thread.message_count.saturating_sub(doomed.len() as u64);
    put(tx, thread)?;
    Ok(doomed.len() as u64)
}

/// How many messages of a thread are stored with a seq in `seqs`.
pub fn count_messages(
    tx: &WriteTransaction,
    thread: &ThreadRecord,
    seqs: std::ops::Range<u64>,
) -> Result<u64, StoreError> {
    let messages = tx.open_table(MESSAGES).or_fail("open messages")?;
    let (tenant, id) = (thread.tenant.as_str(), thread.id.as_str());
    let range = messages
        .range((tenant, id, seqs.start)..(tenant, id, seqs.end))
        .or_fail("read messages")?;
    let mut n = 0;
    for entry in range {
        entry.or_fail("read message")?;
        n += 1;
    }
    Ok(n)
}

/// Deletes a thread with its messages; its observations are the caller's to delete.
pub fn delete(tx: &WriteTransaction, thread: &ThreadRecord) -> Result<(), StoreError> {
    tx.open_table(MESSAGES)
        .or_fail("open messages")?
        .retain_in(thread.messages(0), |_, _| false)
        .or_fail("delete messages")?;
    tx.open_table(THREADS)
        .or_fail("open threads")?
        .remove(thread.key())
        .or_fail("delete thread")?;
    tx.open_table(THREAD_INDEX)
        .or_fail("open thread_index")?
        .remove((thread.tenant.as_str(), thread.resource.as_str(), thread.id.as_str()))
        .or_fail("unindex thread")?;
    Ok(())
}

/// Schema 0 → 1: moves threads and messages under their tenant id, and re-keys the index by
/// tenant id. Returns each thread's tenant id, for the observations to follow.
pub(super) fn migrate_v0(
    tx: &WriteTransaction,
    tenants: &mut super::keys::Tenants,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let mut owner = std::collections::HashMap::new();
    let mut old = Vec::new();
    for entry in tx
        .open_table(V0_THREADS)
        .or_fail("open threads")?
        .iter()
        .or_fail("scan threads")?
    {
        let (_, v) = entry.or_fail("scan threads")?;
        old.push(decode::<ThreadRecord>("thread", v.value())?);
    }
    for mut t in old {
        t.tenant = tenants.of(tx, &t.tenant)?;
        put(tx, &t)?;
        owner.insert(t.id, t.tenant);
    }
    let mut index = Vec::new();
    let mut table = tx.open_table(THREAD_INDEX).or_fail("open thread_index")?;
    for entry in table.iter().or_fail("scan thread_index")? {
        let (k, v) = entry.or_fail("scan thread_index")?;
        let (_, resource, id) = k.value();
        index.push((resource.to_owned(), id.to_owned(), v.value()));
    }
    table.retain(|_, _| false).or_fail("clear thread_index")?;
    for (resource, id, created) in &index {
        // Every thread has its row; a row whose thread is gone indexed nothing.
        if let Some(tenant) = owner.get(id) {
            table
                .insert((tenant.as_str(), resource.as_str(), id.as_str()), *created)
                .or_fail("index thread")?;
        }
    }
    drop(table);
    let mut messages = tx.open_table(MESSAGES).or_fail("open messages")?;
    let old = tx.open_table(V0_MESSAGES).or_fail("open v0 messages")?;
    let mut orphans = 0;
    for entry in old.iter().or_fail("scan messages")? {
        let (k, v) = entry.or_fail("scan messages")?;
        let (id, seq) = k.value();
        match owner.get(id) {
            Some(tenant) => {
                messages
                    .insert((tenant.as_str(), id, seq), v.value())
                    .or_fail("write message")?;
            }
            None => orphans += 1,
        }
    }
    if orphans > 0 {
        log::warn!("migration: dropped {orphans} messages of threads that no longer exist");
    }
    drop((old, messages));
    tx.delete_table(V0_THREADS).or_fail("delete v0 threads")?;
    tx.delete_table(V0_MESSAGES).or_fail("delete v0 messages")?;
    Ok(owner)
}

fn new_message_id() -> String {
    let mut raw = [0u8; 10];
    // Ids only need to be unique within a thread; the clock backs up a failed getrandom.
    if getrandom::fill(&mut raw).is_err() {
        raw[..8].copy_from_slice(&crate::clock::now_ms().to_le_bytes());
    }
    format!("msg_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Reader {
    /// The tenant's thread `id`.
    pub fn thread(&self, tenant: &str, id: &str) -> Result<Option<ThreadRecord>, StoreError> {
        let threads = self.tx.open_table(THREADS).or_fail("open threads")?;
        let found = threads.get((tenant, id)).or_fail("read thread")?;
        found.map(|v| decode("thread", v.value())).transpose()
    }

    /// Every tenant's thread of id `id` (the admin CLI, which sees all tenants).
    pub fn threads_with_id(&self, id: &str) -> Result<Vec<ThreadRecord>, StoreError> {
        let threads = self.tx.open_table(THREADS).or_fail("open threads")?;
        let mut out = Vec::new();
        for entry in threads.iter().or_fail("scan threads")? {
            let (k, v) = entry.or_fail("scan threads")?;
            if k.value().1 == id {
                out.push(decode("thread", v.value())?);
            }
        }
        Ok(out)
    }

    /// Threads of `tenant` (all tenants for `None`), of one resource if given, oldest first.
    pub fn threads(&self, tenant: Option<&str>, resource: Option<&str>) -> Result<Vec<ThreadRecord>, StoreError> {
        let keys = indexed(
            &self.tx.open_table(THREAD_INDEX).or_fail("open thread_index")?,
            tenant,
            resource,
        )?;
        let mut out = Vec::with_capacity(keys.len());
        for (t, id) in keys {
            out.extend(self.thread(&t, &id)?);
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Messages of a thread with seq in `from..`, oldest first.
    pub fn messages_from(&self, thread: &ThreadRecord, from: u64) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table.range(thread.messages(from)).or_fail("read messages")?;
        range
            .map(|e| decode("message", e.or_fail("read message")?.1.value()))
            .collect()
    }

    /// The last `n` messages of a thread, oldest first.
    pub fn last_messages(&self, thread: &ThreadRecord, n: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table.range(thread.messages(0)).or_fail("read messages")?;
        let mut out = range
            .rev()
            .take(n)
            .map(|e| decode("message", e.or_fail("read message")?.1.value()))
            .collect::<Result<Vec<StoredMessage>, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// One page of a thread's messages, oldest first or (`desc`) newest first.
    pub fn message_page(
        &self,
        thread: &ThreadRecord,
        offset: usize,
        limit: usize,
        desc: bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table.range(thread.messages(0)).or_fail("read messages")?;
        let decoded = |e: Result<MessageEntry, redb::StorageError>| {
            decode::<StoredMessage>("message", e.or_fail("read message")?.1.value())
        };
        if desc {
            range.rev().skip(offset).take(limit).map(decoded).collect()
        } else {
            range.skip(offset).take(limit).map(decoded).collect()
        }
    }
}
