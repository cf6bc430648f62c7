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

/// The dimensions a report can group by. `hour` and `day` are the row's time bucket, as
/// `2026-11-22T14:00:00.000Z` and `2026-11-22` (UTC), so rows grouped by them sort in time order.
pub const DIMENSIONS: [&str; 7] = ["key", "provider", "model", "user", "tags", "hour", "day"];

/// The value of dimension `DIMENSIONS[i]` in a stored row; a key is shown by its name (`labels`:
/// tenant id → name, see `Reader::tenant_labels`).
fn dimension(k: &UsageKey, i: usize, labels: &HashMap<String, String>) -> String {
    match DIMENSIONS[i] {
        "key" => labels.get(&k.key).unwrap_or(&k.key).clone(),
        "provider" => k.provider.clone(),
        "model" => k.model.clone(),
        "user" => k.user.clone(),
        "tags" => k.tags.clone(),
        "hour" => crate::clock::iso8601(k.hour.saturating_mul(3_600_000)),
        _ => {
            let hour = crate::clock::iso8601(k.hour.saturating_mul(3_600_000));
            hour.split_once('T').map_or(hour.clone(), |(day, _)| day.to_owned())
        }
    }
}

/// What to report: a time range, the dimensions to group by, and whose usage.
#[derive(Debug, Clone)]
pub struct Query {
    from_ms: u64,
    to_ms: u64,
    group_by: Vec<usize>,
    /// Only this tenant's rows (an HTTP caller sees only its own); all when `None`.
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
        let labels = reader.tenant_labels()?;
        for (k, counts) in reader.usage(from, to)? {
            if self.key.as_ref().is_some_and(|key| *key != k.key) {
                continue;
            }
            let group = self.group_by.iter().map(|&i| dimension(&k, i, &labels)).collect();
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

fn counters(c: &Counts) -> [(&'static str, u64); 6] {
    [
        ("requests", c.requests),
        ("prompt_tokens", c.prompt_tokens),
        ("completion_tokens", c.completion_tokens),
        ("total_tokens", c.total_tokens),
        ("memory_tokens", c.memory_tokens),
        ("estimated_tokens", c.estimated_tokens),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::{add, Counts, UsageKey};

    fn row(hour: u64, key: &str, model: &str, tokens: u64) -> (UsageKey, Counts) {
        let key = UsageKey {
            hour,
            key: key.to_owned(),
            provider: "openai".to_owned(),
            model: model.to_owned(),
            ..Default::default()
        };
        let counts = Counts {
            requests: 1,
            total_tokens: tokens,
            ..Default::default()
        };
        (key, counts)
    }

    /// A store holding rows at 2026-11-22 14:00 and 15:00 and 2026-11-23 09:00 (UTC).
    fn store(name: &str) -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("memgate-usage-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let h = crate::clock::parse("2026-11-22T14:00:00Z").unwrap() / 3_600_000;
        let rows = vec![
            row(h, "alice", "gpt-4o-mini", 10),
            row(h, "bob", "gpt-4o-mini", 5),
            row(h + 1, "alice", "gpt-4o-mini", 20),
            row(h + 1, "alice", "claude-sonnet-4", 7),
            row(h + 19, "alice", "gpt-4o-mini", 100),
        ];
        store.write_blocking(move |tx| add(tx, &rows)).unwrap();
        (store, dir)
    }

    fn report(store: &Store, group_by: Option<&str>, key: Option<&str>) -> Vec<(Vec<String>, u64)> {
        let q = Query::parse(None, None, group_by, key.map(str::to_owned)).unwrap();
        q.run(&store.read().unwrap())
            .unwrap()
            .into_iter()
            .map(|(dims, c)| (dims.into_iter().map(|(_, v)| v).collect(), c.total_tokens))
            .collect()
    }

    #[test]
    fn grouping_by_hour_and_day_buckets_rows_in_time_order() {
        let (store, dir) = store("time");
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            report(&store, Some("hour"), Some("alice")),
            [
                (s(&["2026-11-22T14:00:00.000Z"]), 10),
                (s(&["2026-11-22T15:00:00.000Z"]), 27),
                (s(&["2026-11-23T09:00:00.000Z"]), 100),
            ]
        );
        assert_eq!(
            report(&store, Some("day,model"), None),
            [
                (s(&["2026-11-22", "claude-sonnet-4"]), 7),
                (s(&["2026-11-22", "gpt-4o-mini"]), 35),
                (s(&["2026-11-23", "gpt-4o-mini"]), 100),
            ]
        );
        // The dimension names come back as asked, time first when asked first.
        let q = Query::parse(None, None, Some("day,key"), None).unwrap();
        let rows = q.run(&store.read().unwrap()).unwrap();
        assert_eq!(rows[0].0.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["day", "key"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_grouping_is_still_key_and_model_over_all_time() {
        let (store, dir) = store("default");
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            report(&store, None, None),
            [
                (s(&["alice", "claude-sonnet-4"]), 7),
                (s(&["alice", "gpt-4o-mini"]), 130),
                (s(&["bob", "gpt-4o-mini"]), 5),
            ]
        );
        let err = Query::parse(None, None, Some("week"), None).unwrap_err();
        assert!(err.contains("hour, day"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
