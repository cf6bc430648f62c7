//! Threads and their messages: what memory keeps word for word.
//!
//! Tables (values are JSON):
//! - `threads`: thread id → [`ThreadRecord`]. Ids are global: a thread belongs to the tenant
//!   (gateway key) and resource that first used it, and no other tenant or resource sees it.
//! - `thread_index`: (tenant, resource, thread id) → created_at; lists a tenant's threads.
//! - `messages`: (thread id, seq) → [`StoredMessage`], so a thread is one ordered range and
//!   its unobserved messages are the range from the cursor.
//!
//! Invariants: every `threads` row has exactly one `thread_index` row; a thread's seqs are
//! below its `next_seq`, which only grows; `cursor <= next_seq`; `message_count` is the number
//! of its `messages` rows.

use super::{OrFail, Reader, StoreError};
use crate::ir::Message;
use redb::{AccessGuard, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const THREADS: TableDefinition<&str, &str> = TableDefinition::new("threads");
const THREAD_INDEX: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("thread_index");
const MESSAGES: TableDefinition<(&str, u64), &str> = TableDefinition::new("messages");
type MessageEntry<'a> = (AccessGuard<'a, (&'static str, u64)>, AccessGuard<'a, &'static str>);

/// Longest thread or resource id accepted; they are keys, not documents.
pub const MAX_ID_LEN: usize = 256;

/// A conversation, bound to one tenant and one resource for life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    pub id: String,
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

    /// Whether `tenant` may see this thread (the admin CLI passes `None`: it sees all).
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        tenant.is_none_or(|t| t == self.tenant)
    }
}

/// One stored message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    pub seq: u64,
    /// As the model saw it: role, content (text or parts), tool calls, tool call id.
    pub message: Message,
    /// The local estimate (see `memory::tokens`).
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
    serde_json::from_str(json).map_err(|e| StoreError::Failed(format!("corrupt {what} record: {e}")))
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

/// The thread as the writer sees it, if `tenant` may see it.
pub fn get(tx: &WriteTransaction, id: &str, tenant: Option<&str>) -> Result<Option<ThreadRecord>, StoreError> {
    let threads = tx.open_table(THREADS).or_fail("open threads")?;
    let found = threads.get(id).or_fail("read thread")?;
    let record: Option<ThreadRecord> = found.map(|v| decode("thread", v.value())).transpose()?;
    Ok(record.filter(|t| t.visible_to(tenant)))
}

/// The thread `id` if `tenant` may see it, else [`StoreError::NotFound`].
pub fn owned(tx: &WriteTransaction, id: &str, tenant: Option<&str>) -> Result<ThreadRecord, StoreError> {
    get(tx, id, tenant)?.ok_or_else(|| not_found(id))
}

fn put(tx: &WriteTransaction, record: &ThreadRecord) -> Result<(), StoreError> {
    let mut threads = tx.open_table(THREADS).or_fail("open threads")?;
    threads
        .insert(record.id.as_str(), encode(record).as_str())
        .or_fail("write thread")?;
    Ok(())
}

/// Creates a thread; a taken id is a conflict, whoever holds it.
pub fn create(tx: &WriteTransaction, record: &ThreadRecord) -> Result<(), StoreError> {
    if get(tx, &record.id, None)?.is_some() {
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

/// The thread `id` of this tenant and resource, created if new. A thread bound to another
/// tenant or resource is reported as not found, so ids leak nothing across tenants.
pub fn bind(
    tx: &WriteTransaction,
    id: &str,
    tenant: &str,
    resource: &str,
    now: u64,
) -> Result<ThreadRecord, StoreError> {
    if let Some(t) = get(tx, id, None)? {
        return if t.tenant == tenant && t.resource == resource {
            Ok(t)
        } else {
            Err(not_found(id))
        };
    }
    let record = ThreadRecord::new(id, tenant, resource, now);
    create(tx, &record)?;
    Ok(record)
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
                .insert((thread.id.as_str(), record.seq), encode(&record).as_str())
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
    for entry in messages
        .range((thread.id.as_str(), 0)..=(thread.id.as_str(), u64::MAX))
        .or_fail("read messages")?
    {
        let (k, v) = entry.or_fail("read message")?;
        let m: StoredMessage = decode("message", v.value())?;
        if ids.contains(&m.id) {
            doomed.push(k.value().1);
        }
    }
    for seq in &doomed {
        messages.remove((thread.id.as_str(), *seq)).or_fail("delete message")?;
    }
    drop(messages);
    thread.message_count = thread.message_count.saturating_sub(doomed.len() as u64);
    put(tx, thread)?;
    Ok(doomed.len() as u64)
}

/// Deletes a thread with its messages; its observations are the caller's to delete.
pub fn delete(tx: &WriteTransaction, thread: &ThreadRecord) -> Result<(), StoreError> {
    let id = thread.id.as_str();
    tx.open_table(MESSAGES)
        .or_fail("open messages")?
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
        .or_fail("delete messages")?;
    tx.open_table(THREADS)
        .or_fail("open threads")?
        .remove(id)
        .or_fail("delete thread")?;
    tx.open_table(THREAD_INDEX)
        .or_fail("open thread_index")?
        .remove((thread.tenant.as_str(), thread.resource.as_str(), id))
        .or_fail("unindex thread")?;
    Ok(())
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
    /// The thread `id`, if `tenant` may see it.
    pub fn thread(&self, id: &str, tenant: Option<&str>) -> Result<Option<ThreadRecord>, StoreError> {
        let threads = self.tx.open_table(THREADS).or_fail("open threads")?;
        let found = threads.get(id).or_fail("read thread")?;
        let record: Option<ThreadRecord> = found.map(|v| decode("thread", v.value())).transpose()?;
        Ok(record.filter(|t| t.visible_to(tenant)))
    }

    /// Threads of `tenant` (all tenants for `None`), of one resource if given, oldest first.
    pub fn threads(&self, tenant: Option<&str>, resource: Option<&str>) -> Result<Vec<ThreadRecord>, StoreError> {
        let mut ids = Vec::new();
        let index = self.tx.open_table(THREAD_INDEX).or_fail("open thread_index")?;
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
            ids.push(id.to_owned());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.thread(&id, None)?);
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Messages of a thread with seq in `from..`, oldest first.
    pub fn messages_from(&self, thread: &str, from: u64) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table
            .range((thread, from)..=(thread, u64::MAX))
            .or_fail("read messages")?;
        range
            .map(|e| decode("message", e.or_fail("read message")?.1.value()))
            .collect()
    }

    /// The last `n` messages of a thread, oldest first.
    pub fn last_messages(&self, thread: &str, n: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table.range((thread, 0)..=(thread, u64::MAX)).or_fail("read messages")?;
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
        thread: &str,
        offset: usize,
        limit: usize,
        desc: bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let table = self.tx.open_table(MESSAGES).or_fail("open messages")?;
        let range = table.range((thread, 0)..=(thread, u64::MAX)).or_fail("read messages")?;
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
