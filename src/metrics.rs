//! Counters and histograms for `GET /metrics`, in Prometheus' text format (version 0.0.4).
//!
//! Labelled series sit in small maps behind mutexes: one lock per request end, far from hot
//! enough to matter next to an upstream call. Label values are escaped as the format requires.
//! No label holds an id or a path a client wrote: routes are templates
//! (`/v1/memory/threads/{id}`, `other` for a path no route matches). Model names are those of
//! the routes requests took (an unrouted name is counted as `-`); an upstream that answers any
//! name would let clients mint them, so after [`MAX_MODELS`] distinct names the rest count as
//! `other`, and the series stay bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds, in seconds: from a cached answer to a long reasoning stream.
const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Distinct model label values at most; later names are labelled `other`.
pub const MAX_MODELS: usize = 100;

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations at or below each bound (cumulative, as the format wants).
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter_mut().zip(BOUNDS) {
            if s <= bound {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }
}

/// One request as it ended.
#[derive(Debug)]
pub struct RequestEnd<'a> {
    pub route: &'a str,
    pub model: &'a str,
    pub status: u16,
    pub latency: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The tokens are memgate's estimate: the upstream reported none.
    pub estimated: bool,
    /// Upstream attempts beyond the first (retries and fallbacks).
    pub retries: u32,
    pub fell_back: bool,
}

/// Everything `/metrics` reports.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    upstream: Mutex<BTreeMap<String, Histogram>>,
    tokens: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The model label values in use (bounded by [`MAX_MODELS`]).
    models: Mutex<BTreeSet<String>>,
    /// The part of `tokens` that memgate estimated.
    estimated: Mutex<BTreeMap<(String, &'static str), u64>>,
    in_flight: AtomicI64,
    retries: AtomicU64,
    fallbacks: AtomicU64,
    /// Observer and reflector runs: `[observer ok, observer failed, reflector ok, reflector failed]`.
    memory_runs: [AtomicU64; 4],
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which of memory's background jobs ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryJob {
    Observer,
    Reflector,
}

impl Metrics {
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests being served now (streams until their end).
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn ended(&self, r: &RequestEnd) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let model = self.model_label(r.model);
        let model = model.as_str();
        *lock(&self.requests)
            .entry((r.route.to_owned(), model.to_owned(), r.status))
            .or_default() += 1;
        lock(&self.latency)
            .entry(r.route.to_owned())
            .or_default()
            .observe(r.latency);
        if r.prompt_tokens + r.completion_tokens > 0 {
            let mut t = lock(&self.tokens);
            *t.entry((model.to_owned(), "prompt")).or_default() += r.prompt_tokens;
            *t.entry((model.to_owned(), "completion")).or_default() += r.completion_tokens;
            if r.estimated {
                let mut e = lock(&self.estimated);
                *e.entry((model.to_owned(), "prompt")).or_default() += r.prompt_tokens;
                *e.entry((model.to_owned(), "completion")).or_default() += r.completion_tokens;
            }
        }
        self.retries.fetch_add(u64::from(r.retries), Ordering::Relaxed);
        if r.fell_back {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn model_label(&self, model: &str) -> String {
        if model.is_empty() {
            return "-".to_owned();
        }
        let mut known = lock(&self.models);
        if known.contains(model) {
            return model.to_owned();
        }
        if known.len() >= MAX_MODELS {
            return "other".to_owned();
        }
        known.insert(model.to_owned());
        model.to_owned()
    }

    /// Time from sending to an upstream to its answer's head, retries included.
    pub fn upstream(&self, provider: &str, d: Duration) {
        lock(&self.upstream).entry(provider.to_owned()).or_default().observe(d);
    }

    pub fn memory_run(&self, job: MemoryJob, ok: bool) {
        let i = match job {
            MemoryJob::Observer => 0,
            MemoryJob::Reflector => 2,
        } + usize::from(!ok);
        self.memory_runs[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A request turned away before it was served (`rate_limited`, `overloaded`…).
    pub fn rejected(&self, why: &'static str) {
        *lock(&self.rejected).entry(why).or_default() += 1;
    }

    /// The text exposition; `db_bytes` is the database file's size.
    pub fn render(&self, db_bytes: u64) -> String {
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "memgate_requests_total",
            "counter",
            "Requests served, by route, model and status.",
        );
        for ((route, model, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "memgate_requests_total{{route=\"{}\",model=\"{}\",status=\"{status}\"}} {n}",
                esc(route),
                esc(model)
            );
        }
        histograms(
            &mut out,
            "memgate_request_duration_seconds",
            "Time from request to the end of its answer (streams included), by route.",
            "route",
            &lock(&self.latency),
        );
        histograms(
            &mut out,
            "memgate_upstream_duration_seconds",
            "Time from sending upstream to the answer's head, retries included, by provider.",
            "provider",
            &lock(&self.upstream),
        );
        for (name, help, counts) in [
            (
                "memgate_tokens_total",
                "Tokens used by answered requests, by model and kind.",
                &self.tokens,
            ),
            (
                "memgate_tokens_estimated_total",
                "The part of memgate_tokens_total that memgate estimated because the upstream reported no usage.",
                &self.estimated,
            ),
        ] {
            header(&mut out, name, "counter", help);
            for ((model, kind), n) in lock(counts).iter() {
                let _ = writeln!(out, "{name}{{model=\"{}\",kind=\"{kind}\"}} {n}", esc(model));
            }
        }
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "memgate_in_flight_requests",
            "gauge",
            "Requests being served now.",
            self.in_flight().to_string(),
        );
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        gauge(
            &mut out,
            "memgate_upstream_retries_total",
            "counter",
            "Upstream attempts beyond a route's first.",
            count(&self.retries),
        );
        gauge(
            &mut out,
            "memgate_fallbacks_total",
            "counter",
            "Requests answered by a fallback route.",
            count(&self.fallbacks),
        );
        header(
            &mut out,
            "memgate_memory_runs_total",
            "counter",
            "Observer and reflector runs, by job and outcome.",
        );
        for (i, (job, outcome)) in [
            ("observer", "ok"),
            ("observer", "failed"),
            ("reflector", "ok"),
            ("reflector", "failed"),
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                out,
                "memgate_memory_runs_total{{job=\"{job}\",outcome=\"{outcome}\"}} {}",
                count(&self.memory_runs[i])
            );
        }
        header(
            &mut out,
            "memgate_rejected_total",
            "counter",
            "Requests turned away before being served, by reason.",
        );
        for (why, n) in lock(&self.rejected).iter() {
            let _ = writeln!(out, "memgate_rejected_total{{reason=\"{why}\"}} {n}");
        }
        gauge(
            &mut out,
            "memgate_db_bytes",
            "gauge",
            "Size of the database file.",
            db_bytes.to_string(),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histograms(out: &mut String, name: &str, help: &str, label: &str, map: &BTreeMap<String, Histogram>) {
    header(out, name, "histogram", help);
    for (value, h) in map {
        let v = esc(value);
        for (bound, n) in BOUNDS.iter().zip(h.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{label}=\"{v}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label}=\"{v}\",le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{label}=\"{v}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{v}\"}} {}", h.count);
    }
}

/// A label value escaped as the text format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_buckets_and_escapes() {
        let m = Metrics::default();
        m.started();
        m.ended(&RequestEnd {
            route: "/v1/chat/completions",
            model: "openai/\"x\"",
            status: 200,
            latency: Duration::from_millis(30),
            prompt_tokens: 10,
            completion_tokens: 5,
            estimated: false,
            retries: 2,
            fell_back: true,
        });
        m.memory_run(MemoryJob::Reflector, false);
        let text = m.render(4096);
        for want in [
            r#"memgate_requests_total{route="/v1/chat/completions",model="openai/\"x\"",status="200"} 1"#,
            r#"memgate_request_duration_seconds_bucket{route="/v1/chat/completions",le="0.025"} 0"#,
            r#"memgate_request_duration_seconds_bucket{route="/v1/chat/completions",le="0.05"} 1"#,
            r#"memgate_tokens_total{model="openai/\"x\"",kind="completion"} 5"#,
            "memgate_in_flight_requests 0",
            "memgate_upstream_retries_total 2",
            "memgate_fallbacks_total 1",
            r#"memgate_memory_runs_total{job="reflector",outcome="failed"} 1"#,
            "memgate_db_bytes 4096",
        ] {
            assert!(text.contains(want), "missing {want}\n{text}");
        }
    }

    #[test]
    fn model_labels_stay_bounded_however_many_names_clients_route() {
        let m = Metrics::default();
        for i in 0..MAX_MODELS + 50 {
            m.started();
            m.ended(&RequestEnd {
                route: "/v1/chat/completions",
                model: &format!("local/minted-{i}"),
                status: 200,
                latency: Duration::from_millis(1),
                prompt_tokens: 1,
                completion_tokens: 1,
                estimated: false,
                retries: 0,
                fell_back: false,
            });
        }
        let text = m.render(0);
        let series = text
            .lines()
            .filter(|l| l.starts_with("memgate_requests_total{"))
            .count();
        assert_eq!(series, MAX_MODELS + 1, "{text}");
        assert!(text.contains(r#"model="other",status="200"} 50"#), "{text}");
        assert!(!text.contains("minted-120"), "{text}");
    }
}
