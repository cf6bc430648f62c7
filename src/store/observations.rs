//! Observation records: what memory keeps in condensed form, per thread or per resource.
//!
//! Tables (values are JSON):
//! - `observations`: scope key → [`ObservationRecord`], the active generation.
//! - `observation_history`: (scope key, generation) → [`Generation`], every generation a
//!   reflection replaced, so nothing the observer wrote is ever thrown away unseen.

use super::{OrFail, Reader, StoreError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

const OBSERVATIONS: TableDefinition<&str, &str> = TableDefinition::new("observations");
const HISTORY: TableDefinition<(&str, u32), &str> = TableDefinition::new("observation_history");

/// Whose observations: one thread's, or a resource's shared by all its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Thread { tenant: &'a str, id: &'a str },
    Resource { tenant: &'a str, resource: &'a str },
}

impl Scope<'_> {
    /// The record's key. The NUL separators cannot occur in ids (control characters are refused).
    pub fn key(&self) -> String {
        match self {
            Scope::Thread { tenant, id } => format!("thread\0{tenant}\0{id}"),
            Scope::Resource { tenant, resource } => format!("resource\0{tenant}\0{resource}"),
        }
    }
}

/// The active observations of a scope and the bookkeeping around them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservationRecord {
    /// Dated observation lines (`Date: …` headers, `* 🔴 (14:30) …` lines).
    pub text: String,
    pub tokens: u64,
    /// What the user is working on now, as the observer last saw it.
    #[serde(default)]
    pub current_task: Option<String>,
    /// 0 until the first reflection; each reflection starts the next.
    pub generation: u32,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub last_observed_at: Option<u64>,
    #[serde(default)]
    pub observer_runs: u64,
    #[serde(default)]
    pub reflector_runs: u64,
    /// Observer and reflector calls that failed (they are retried later).
    #[serde(default)]
    pub failures: u64,
    /// Observer and reflector answers refused by memory's checks (`lines::check`): empty,
    /// echoing the instructions, looping, too long, or a reflection that lost most content.
    #[serde(default)]
    pub refused: u64,
    /// Tokens the observer and reflector spent, kept apart from the users' own.
    #[serde(default)]
    pub memory_prompt_tokens: u64,
    #[serde(default)]
    pub memory_completion_tokens: u64,
}

/// A generation a reflection replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub generation: u32,
    pub text: String,
    pub tokens: u64,
    pub created_at: u64,
    pub replaced_at: u64,
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("corrupt observation record: {e}")))
}

pub(super) fn init(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(OBSERVATIONS).or_fail("open observations")?;
    tx.open_table(HISTORY).or_fail("open observation_history")?;
    Ok(())
}

/// The scope's record as the writer sees it (default when it has none yet).
pub fn get(tx: &WriteTransaction, scope: &str) -> Result<ObservationRecord, StoreError> {
    let table = tx.open_table(OBSERVATIONS).or_fail("open observations")?;
    let found = table.get(scope).or_fail("read observations")?;
    Ok(found.map(|v| decode(v.value())).transpose()?.unwrap_or_default())
}

pub fn put(tx: &WriteTransaction, scope: &str, record: &ObservationRecord) -> Result<(), StoreError> {
    let json = serde_json::to_string(record).unwrap_or_default();
    tx.open_table(OBSERVATIONS)
        .or_fail("open observations")?
        .insert(scope, json.as_str())
        .or_fail("write observations")?;
    Ok(())
}

/// Files a replaced generation under its number.
pub fn archive(tx: &WriteTransaction, scope: &str, old: &Generation) -> Result<(), StoreError> {
    let json = serde_json::to_string(old).unwrap_or_default();
    tx.open_table(HISTORY)
        .or_fail("open observation_history")?
        .insert((scope, old.generation), json.as_str())
        .or_fail("write observation_history")?;
    Ok(())
}

/// Deletes a scope's record and history.
pub fn delete(tx: &WriteTransaction, scope: &str) -> Result<(), StoreError> {
    tx.open_table(OBSERVATIONS)
        .or_fail("open observations")?
        .remove(scope)
        .or_fail("delete observations")?;
    tx.open_table(HISTORY)
        .or_fail("open observation_history")?
        .retain_in((scope, 0)..=(scope, u32::MAX), |_, _| false)
        .or_fail("delete observation_history")?;
    Ok(())
}

/// Schema 0 → 1: scope keys name tenant ids. A thread's record (`thread\0ID` in schema 0) moves
/// under its thread's tenant; one whose thread is gone could not be read any more and is dropped.
pub(super) fn migrate_v0(
    tx: &WriteTransaction,
    tenants: &mut super::keys::Tenants,
    owner: &std::collections::HashMap<String, String>,
) -> Result<(), StoreError> {
    let mut rekey = |tx: &WriteTransaction, old: &str| -> Result<Option<String>, StoreError> {
        let mut parts = old.split('\0');
        Ok(match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("thread"), Some(id), None, _) => owner.get(id).map(|tenant| Scope::Thread { tenant, id }.key()),
            (Some("resource"), Some(name), Some(resource), None) => Some(
                Scope::Resource {
                    tenant: &tenants.of(tx, name)?,
                    resource,
                }
                .key(),
            ),
            _ => None,
        })
    };
    let mut records = Vec::new();
    for entry in tx
        .open_table(OBSERVATIONS)
        .or_fail("open observations")?
        .iter()
        .or_fail("scan observations")?
    {
        let (k, v) = entry.or_fail("scan observations")?;
        records.push((k.value().to_owned(), v.value().to_owned()));
    }
    let mut history = Vec::new();
    for entry in tx
        .open_table(HISTORY)
        .or_fail("open observation_history")?
        .iter()
        .or_fail("scan observation_history")?
    {
        let (k, v) = entry.or_fail("scan observation_history")?;
        let (scope, generation) = k.value();
        history.push((scope.to_owned(), generation, v.value().to_owned()));
    }
    let mut new_records = Vec::new();
    for (old, json) in records {
        match rekey(tx, &old)? {
            Some(key) => new_records.push((key, json)),
            None => log::warn!("migration: dropped the observations of a deleted thread"),
        }
    }
    let mut new_history = Vec::new();
    for (old, generation, json) in history {
        if let Some(key) = rekey(tx, &old)? {
            new_history.push((key, generation, json));
        }
    }
    let mut table = tx.open_table(OBSERVATIONS).or_fail("open observations")?;
    table.retain(|_, _| false).or_fail("clear observations")?;
    for (key, json) in &new_records {
        table
            .insert(key.as_str(), json.as_str())
            .or_fail("write observations")?;
    }
    let mut table = tx.open_table(HISTORY).or_fail("open observation_history")?;
    table.retain(|_, _| false).or_fail("clear observation_history")?;
    for (key, generation, json) in &new_history {
        table
            .insert((key.as_str(), *generation), json.as_str())
            .or_fail("write observation_history")?;
    }
    Ok(())
}

/// Keys of `resource`'s shared records, as the writer sees them: of `tenant`, or (`None`) of every
/// tenant.
pub fn resource_scopes(tx: &WriteTransaction, tenant: Option<&str>, resource: &str) -> Result<Vec<String>, StoreError> {
    scopes_of(
        &tx.open_table(OBSERVATIONS).or_fail("open observations")?,
        tenant,
        resource,
    )
}

fn scopes_of(
    table: &impl ReadableTable<&'static str, &'static str>,
    tenant: Option<&str>,
    resource: &str,
) -> Result<Vec<String>, StoreError> {
    if let Some(tenant) = tenant {
        let key = Scope::Resource { tenant, resource }.key();
        let found = table.get(key.as_str()).or_fail("read observations")?.is_some();
        return Ok(found.then_some(key).into_iter().collect());
    }
    let suffix = format!("\0{resource}");
    let mut keys = Vec::new();
    for entry in table.range("resource\0"..).or_fail("read observations")? {
        let (k, _) = entry.or_fail("read observations")?;
        let key = k.value();
        if !key.starts_with("resource\0") {
            break;
        }
        // `resource\0TENANT\0RESOURCE`: ids hold no NUL, so the suffix is exact.
        if key.ends_with(&suffix) && key.matches('\0').count() == 2 {
            keys.push(key.to_owned());
        }
    }
    Ok(keys)
}

impl Reader {
    /// The scope's record; `None` before its first observation.
    pub fn observations(&self, scope: &str) -> Result<Option<ObservationRecord>, StoreError> {
        let table = self.tx.open_table(OBSERVATIONS).or_fail("open observations")?;
        let found = table.get(scope).or_fail("read observations")?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// Replaced generations, oldest first.
    pub fn history(&self, scope: &str) -> Result<Vec<Generation>, StoreError> {
        let table = self.tx.open_table(HISTORY).or_fail("open observation_history")?;
        let range = table
            .range((scope, 0)..=(scope, u32::MAX))
            .or_fail("read observation_history")?;
        range
            .map(|e| decode(e.or_fail("read observation_history")?.1.value()))
            .collect()
    }
}
