//! What one tenant may put in storage: caps on the request fields that are stored, and a quota
//! of stored message bytes per tenant (`[limits] max_stored_bytes_per_key`).
//!
//! The quota is a counter per tenant, kept in the same transaction as the messages (and the
//! thread records created or grown through the Memory API) it counts,
//! so checking it costs one point read, never a scan. Bytes are the stored JSON of each message
//! (role, content, tool calls). Each thread's share is kept beside the total, so deleting a
//! thread (or erasing its resource) gives its bytes back. Deleting single messages does not:
//! the total only shrinks by whole threads. Databases written before the quota existed count
//! from the first write after the upgrade.
//!
//! Tables: `stored_bytes`: tenant → bytes; `thread_bytes`: (tenant, thread id) → bytes. The
//! first is the sum of the second over the tenant's threads.

use super::{OrFail, StoreError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde_json::Value;

const STORED: TableDefinition<&str, u64> = TableDefinition::new("stored_bytes");
const THREAD_BYTES: TableDefinition<(&str, &str), u64> = TableDefinition::new("thread_bytes");

/// Longest `user` (OpenAI's field; Anthropic's `metadata.user_id`), kept in every usage row.
pub const MAX_USER: usize = 256;
/// Most `tags` on a request, and the longest tag; they are kept in usage rows.
pub const MAX_TAGS: usize = 16;
pub const MAX_TAG: usize = 64;
/// Longest thread `title`.
pub const MAX_TITLE: usize = 1024;
/// Most keys in a thread's `metadata`, and its largest size as JSON.
pub const MAX_METADATA_KEYS: usize = 64;
pub const MAX_METADATA: usize = 16 << 10;

/// A field over its cap: the field's name and a message that names the cap.
pub type CapError = (&'static str, String);

/// Checks a request's `user` and `tags` (as sent: `tags` a list of strings).
pub fn check_usage_fields(user: Option<&str>, tags: Option<&Value>) -> Result<(), CapError> {
    if user.is_some_and(|u| u.len() > MAX_USER) {
        return Err(("user", format!("user must be at most {MAX_USER} bytes")));
    }
    let tags = tags.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if tags.len() > MAX_TAGS {
        return Err((
            "tags",
            format!("tags may hold at most {MAX_TAGS} tags, not {}", tags.len()),
        ));
    }
    if tags.iter().filter_map(Value::as_str).any(|t| t.len() > MAX_TAG) {
        return Err(("tags", format!("each tag must be at most {MAX_TAG} bytes")));
    }
    Ok(())
}

/// Checks a thread's `title` and `metadata` before they are stored.
pub fn check_thread_fields(
    title: Option<&str>,
    metadata: Option<&serde_json::Map<String, Value>>,
) -> Result<(), CapError> {
    if title.is_some_and(|t| t.len() > MAX_TITLE) {
        return Err(("title", format!("title must be at most {MAX_TITLE} bytes")));
    }
    if let Some(m) = metadata {
        if m.len() > MAX_METADATA_KEYS {
            return Err((
                "metadata",
                format!("metadata may hold at most {MAX_METADATA_KEYS} keys, not {}", m.len()),
            ));
        }
        let size = serde_json::to_string(m).map_or(usize::MAX, |s| s.len());
        if size > MAX_METADATA {
            return Err((
                "metadata",
                format!("metadata must be at most {MAX_METADATA} bytes as JSON, not {size}"),
            ));
        }
    }
    Ok(())
}

/// The bytes `messages` take as stored.
pub fn message_bytes<'a>(messages: impl IntoIterator<Item = &'a crate::ir::Message>) -> u64 {
    messages
        .into_iter()
        .map(|m| serde_json::to_string(m).map_or(0, |s| s.len() as u64))
        .sum()
}

/// What a thread's record (ids, title, metadata) takes, as counted for the quota.
pub fn record_bytes(record: &super::ThreadRecord) -> u64 {
    serde_json::to_string(record).map_or(0, |s| s.len() as u64)
}

/// Refuses a request whose new messages would take `tenant` past `limit`, before anything is
/// sent upstream (the answer is then stored whole, so a key may pass its quota by one answer).
pub fn admit(reader: &super::Reader, tenant: &str, bytes: u64, limit: Option<u64>) -> Result<(), StoreError> {
    let Some(max) = limit else { return Ok(()) };
    let used = reader.stored_bytes(tenant)?;
    if used.saturating_add(bytes) > max {
        return Err(over(used, bytes, max));
    }
    Ok(())
}

fn over(used: u64, bytes: u64, max: u64) -> StoreError {
    StoreError::Quota(format!(
        "this key stores {used} bytes of messages and this request adds {bytes}: over its quota of {max} bytes \
         ([limits] max_stored_bytes_per_key); delete threads to make room"
    ))
}

/// Adds `bytes` to the tenant's count (and the thread's share), or refuses with
/// [`StoreError::Quota`] if that would pass `limit`. Refuses before writing anything, as the
/// writer's ops must.
pub fn charge(
    tx: &WriteTransaction,
    tenant: &str,
    thread: &str,
    bytes: u64,
    limit: Option<u64>,
) -> Result<(), StoreError> {
    let mut totals = tx.open_table(STORED).or_fail("open stored_bytes")?;
    let used = totals
        .get(tenant)
        .or_fail("read stored_bytes")?
        .map_or(0, |v| v.value());
    let after = used.saturating_add(bytes);
    if let Some(max) = limit.filter(|&max| after > max) {
        return Err(over(used, bytes, max));
    }
    totals.insert(tenant, after).or_fail("write stored_bytes")?;
    let mut shares = tx.open_table(THREAD_BYTES).or_fail("open thread_bytes")?;
    let share = shares
        .get((tenant, thread))
        .or_fail("read thread_bytes")?
        .map_or(0, |v| v.value());
    shares
        .insert((tenant, thread), share.saturating_add(bytes))
        .or_fail("write thread_bytes")?;
    Ok(())
}

/// Gives a deleted thread's bytes back to its tenant.
pub fn release(tx: &WriteTransaction, tenant: &str, thread: &str) -> Result<(), StoreError> {
    let mut shares = tx.open_table(THREAD_BYTES).or_fail("open thread_bytes")?;
    let Some(share) = shares.remove((tenant, thread)).or_fail("delete thread_bytes")? else {
        return Ok(());
    };
    let share = share.value();
    let mut totals = tx.open_table(STORED).or_fail("open stored_bytes")?;
    let used = totals
        .get(tenant)
        .or_fail("read stored_bytes")?
        .map_or(0, |v| v.value());
    totals
        .insert(tenant, used.saturating_sub(share))
        .or_fail("write stored_bytes")?;
    Ok(())
}

pub(super) fn init(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(STORED).or_fail("open stored_bytes")?;
    tx.open_table(THREAD_BYTES).or_fail("open thread_bytes")?;
    Ok(())
}

impl super::Reader {
    /// The message bytes `tenant` stores, as counted for its quota.
    pub fn stored_bytes(&self, tenant: &str) -> Result<u64, StoreError> {
        let totals = self.tx.open_table(STORED).or_fail("open stored_bytes")?;
        Ok(totals
            .get(tenant)
            .or_fail("read stored_bytes")?
            .map_or(0, |v| v.value()))
    }
}
