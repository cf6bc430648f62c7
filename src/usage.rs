//! Usage accounting: each answered request, and each of memory's own model calls, adds to an
//! hourly row per key, provider, model, `user` and tags (`store::usage`).
//!
//! Counts gather in memory and reach the database every [`FLUSH_EVERY`], in one write, so
//! accounting costs a request a map update, not a commit. A read (`GET /v1/usage`, `memgate
//! usage`) flushes first, and so does shutdown, so what is reported is complete.

use crate::store::usage::{self, Counts, UsageKey};
use crate::store::{Reader, Store, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Counts not yet written.
#[derive(Debug, Default)]
pub struct Ledger {
    pending: Mutex<HashMap<UsageKey, Counts>>,
}

/// One request's or memory call's share of usage.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub key: String,
    pub provider: String,
    pub model: String,
    pub user: String,
    pub tags: String,
    pub counts: Counts,
}

impl Ledger {
    pub fn record(&self, e: Entry) {
        let key = UsageKey {
            hour: crate::clock::now_ms() / 3_600_000,
            key: e.key,
            provider: e.provider,
            model: e.model,
            user: e.user,
            tags: e.tags,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.entry(key).or_default().add(&e.counts);
    }

    /// Writes what has gathered; on failure the counts go back, to be tried again.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let rows: Vec<(UsageKey, Counts)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if rows.is_empty() {
            return Ok(());
        }
        let kept = rows.clone();
        match store.write(move |tx| usage::add(tx, &rows)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                for (k, c) in kept {
                    pending.entry(k).or_default().add(&c);
                }
                Err(e)
            }
        }
    }
}

/// Writes the ledger every [`FLUSH_EVERY`] for as long as the app lives.
pub async fn flusher(app: std::sync::Weak<crate::app::App>) {
    loop {
        smol::Timer::after(FLUSH_EVERY).await;
        let Some(app) = app.upgrade() else { return };
        if let Err(e) = app.usage.flush(&app.store).await {
            log::warn!("usage counts could not be written yet ({e}); they are kept and retried");
        }
    }
}

/// The `tags` of a request: strings, sorted, joined by commas (one usage dimension).
pub fn tags(v: Option<&serde_json::Value>) -> String {
    let mut t: Vec<&str> = v
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    t.sort_unstable();
    t.dedup();
    t.join(",")
}

/// One report row: the grouped dimensions' names and values, and the sums.
pub type Row = (Vec<(&'static str, String)>, Counts);

/// The dimensions a report can group by, in the order they are printed.
pub const DIMENSIONS: [&str; 5] = ["key", "provider", "model", "user", "tags"];

/// What to report: a time range, the dimensions to group by, and whose usage.
#[derive(Debug, Clone)]
pub struct Query {
    from_ms: u64,
    to_ms: u64,
    group_by: Vec<usize>,
    /// Only this gateway key's rows (an HTTP caller sees only its own); all when `None`.
    pub key: Option<String>,
}

impl Query {
    /// From the `from`, `to` (epoch seconds, `YYYY-MM-DD` or RFC 3339 UTC) and `group_by`
    /// (comma-separated dimensions; default `key,model`) parameters.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
        key: Option<String>,
    ) -> Result<Query, String> {
        let time = |name: &str, v: Option<&str>, default: u64| match v.filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => crate::clock::parse(v).ok_or_else(|| {
                format!("{name} {v:?} is not a time: use epoch seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
            }),
        };
        let from_ms = time("from", from, 0)?;
        let to_ms = time("to", to, u64::MAX)?;
        let group_by = group_by
            .filter(|g| !g.is_empty())
            .unwrap_or("key,model")
            .split(',')
            .map(|d| {
                DIMENSIONS
                    .iter()
                    .position(|x| *x == d.trim())
                    .ok_or_else(|| format!("group_by {:?} is not one of {}", d.trim(), DIMENSIONS.join(", ")))
            })
            .collect::<Result<Vec<usize>, String>>()?;
        Ok(Query {
            from_ms,
            to_ms,
            group_by,
            key,
        })
    }

    /// The grouped rows, in dimension order: each the grouped dimensions' values and the sums.
    pub fn run(&self, reader: &Reader) -> Result<Vec<Row>, StoreError> {
        // Hours overlapping the range; rows are hourly, so the edges round outward.
        let from = self.from_ms / 3_600_000;
        let to = self.to_ms.div_ceil(3_600_000).max(from + 1);
        let mut groups: std::collections::BTreeMap<Vec<String>, Counts> = Default::default();
        for (k, counts) in reader.usage(from, to)? {
            if self.key.as_ref().is_some_and(|key| *key != k.key) {
                continue;
            }
            let fields = [&k.key, &k.provider, &k.model, &k.user, &k.tags];
            let group = self.group_by.iter().map(|&i| fields[i].clone()).collect();
            groups.entry(group).or_default().add(&counts);
        }
        Ok(groups
            .into_iter()
            .map(|(values, counts)| {
                let dims = self.group_by.iter().map(|&i| DIMENSIONS[i]).zip(values).collect();
                (dims, counts)
            })
            .collect())
    }
}

/// A report as `GET /v1/usage` answers it: `{"data":[{dimensions…, counters…}]}`.
pub fn to_json(rows: &[Row]) -> serde_json::Value {
    let data: Vec<serde_json::Value> = rows
        .iter()
        .map(|(dims, c)| {
            let mut row: serde_json::Map<String, serde_json::Value> = dims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone())))
                .collect();
            for (k, v) in counters(c) {
                row.insert(k.to_owned(), v.into());
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({"object": "list", "data": data})
}

/// A report as `memgate usage` prints it: one aligned row per group.
pub fn to_text(rows: &[Row], group_by: &[&str]) -> String {
    let mut table: Vec<Vec<String>> = vec![group_by
        .iter()
        .map(|d| d.to_string())
        .chain(counters(&Counts::default()).into_iter().map(|(k, _)| k.to_owned()))
        .collect()];
    for (dims, c) in rows {
        let cells = dims
            .iter()
            .map(|(_, v)| if v.is_empty() { "-".to_owned() } else { v.clone() })
            .chain(counters(c).into_iter().map(|(_, v)| v.to_string()));
        table.push(cells.collect());
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no usage recorded in this range)\n");
    }
    out
}

fn counters(c: &Counts) -> [(&'static str, u64); 5] {
    [
        ("requests", c.requests),
        ("prompt_tokens", c.prompt_tokens),
        ("completion_tokens", c.completion_tokens),
        ("total_tokens", c.total_tokens),
        ("memory_tokens", c.memory_tokens),
    ]
}
