//! Recorded exchanges: the `replay` provider kind and `memgate-mock` answer from them.
//!
//! A fixture is a directory holding `meta.json` and the recorded body (`response.json` or
//! `response.sse`, raw bytes exactly as the vendor sends them):
//!
//! ```json
//! {"path": "/v1/chat/completions", "method": "POST", "match": ["What is 2+2?"], "absent": ["tool_call_id"],
//!  "status": 200, "content_type": "application/json", "delay_ms": 0, "event_delay_ms": 0, "headers": {},
//!  "capture": {"name": {"after": "name is ", "until": " .,;:!?\"\\<\n", "default": null}}}
//! ```
//!
//! The first fixture (by directory name) whose path and method equal the request's, whose
//! `match` strings all occur in the request body, whose `absent` strings do not, and whose
//! captures are all found (or have a default) answers.
//!
//! A capture lets a fixture answer from the context it receives. For each entry of `capture`,
//! the last occurrence of `after` in the raw request body (ASCII case-insensitive) is found; the
//! value is the text following it up to, not including, the first character listed in `until`
//! (or the end of the body; `until` defaults to empty). An empty value counts as not found. A
//! capture that is not found takes its `default` (a string; absent or `null` means none) and,
//! without one, the fixture does not match, so a later fixture (an "unknown" answer, say) can.
//! Every `{{NAME}}` in the answer's body (JSON or SSE) is replaced by the value of the capture
//! NAME, JSON-escaped, as the placeholder is meant to sit inside a JSON string. Bodies of
//! fixtures without captures are sent byte for byte.
//!
//! `"times": N` makes a fixture answer only its first N matching requests; later ones fall
//! through to the fixtures after it (a flaky upstream that recovers).
//!
//! A `replay` provider speaks the OpenAI wire format: point its `dir` at fixtures recorded from an
//! OpenAI-compatible server (`fixtures/openai`, `fixtures/memory`), and every chat, Responses and
//! embeddings request is answered from them, in process, with no network.

use crate::error::ApiError;
use crate::upstream::{UpstreamRequest, UpstreamResponse};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub path: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default, rename = "match")]
    needles: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub event_delay_ms: u64,
    #[serde(default)]
    pub headers: serde_json::Map<String, Value>,
    #[serde(default)]
    capture: BTreeMap<String, Capture>,
    /// Answers only this many matching requests, then lets later fixtures answer (a flaky
    /// upstream that recovers: a 503 `times: 2`, then a success).
    #[serde(default)]
    times: Option<u64>,
}

fn post() -> String {
    "POST".to_owned()
}

fn ok() -> u16 {
    200
}

/// One value taken from the request body; see the module documentation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Capture {
    after: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    default: Option<String>,
}

/// One recorded exchange.
#[derive(Debug)]
pub struct Fixture {
    pub name: String,
    pub meta: Meta,
    body: Vec<u8>,
    pub sse: bool,
    /// Requests answered so far, for `times`.
    answered: AtomicU64,
}

impl Fixture {
    /// The recorded body with the captured values filled in.
    pub fn body(&self, values: &[(&str, String)]) -> Cow<'_, [u8]> {
        fill(&self.body, values)
    }

    pub fn content_type(&self) -> &str {
        self.meta.content_type.as_deref().unwrap_or(if self.sse {
            "text/event-stream"
        } else {
            "application/json"
        })
    }
}

/// A directory of fixtures, in matching order.
#[derive(Debug)]
pub struct Fixtures {
    dir: PathBuf,
    list: Vec<Fixture>,
}

impl Fixtures {
    pub fn load(dir: &Path) -> Result<Fixtures, String> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read fixture dir {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("meta.json").exists())
            .collect();
        dirs.sort();
        let list = dirs.iter().map(|d| load_one(d)).collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(format!(
                "fixture dir {} holds no fixtures (directories with a meta.json)",
                dir.display()
            ));
        }
        Ok(Fixtures {
            dir: dir.to_path_buf(),
            list,
        })
    }

    /// The fixture answering a request, with its captured values.
    pub fn find(&self, method: &str, path: &str, body: &str) -> Option<(&Fixture, Vec<(&str, String)>)> {
        self.list.iter().find_map(|f| {
            let fits = f.meta.path == path
                && f.meta.method == method
                && f.meta.needles.iter().all(|n| body.contains(n.as_str()))
                && !f.meta.absent.iter().any(|n| body.contains(n.as_str()));
            if !fits {
                return None;
            }
            // Claimed before the captures are checked: a fixture that matches is used up.
            if let Some(limit) = f.meta.times {
                if f.answered.fetch_add(1, Ordering::Relaxed) >= limit {
                    return None;
                }
            }
            let values = f
                .meta
                .capture
                .iter()
                .map(|(name, c)| Some((name.as_str(), capture(body, c).or_else(|| c.default.clone())?)))
                .collect::<Option<Vec<_>>>()?;
            Some((f, values))
        })
    }

    /// The recorded answer to an upstream request, as if it had come over the network.
    pub fn answer(&self, req: &UpstreamRequest) -> Result<UpstreamResponse, ApiError> {
        let path = http_types::Url::parse(&req.url).map_or_else(|_| req.url.clone(), |u| u.path().to_owned());
        let body = String::from_utf8_lossy(&req.body);
        let origin = format!("replay {}", self.dir.display());
        let Some((f, values)) = self.find(req.method.as_ref(), &path, &body) else {
            return Err(ApiError::new(
                502,
                "upstream_error",
                Some("no_fixture"),
                format!(
                "{origin}: no fixture matches {} {path}; record one (see fixtures/openai/README.md) or send a prompt \
                 an existing fixture matches",
                req.method
            ),
            ));
        };
        log::debug!("{origin}: answered from {}", f.name);
        Ok(UpstreamResponse::from_bytes(
            f.meta.status,
            f.content_type(),
            f.body(&values).into_owned(),
            &origin,
        ))
    }
}

fn load_one(d: &Path) -> Result<Fixture, String> {
    let name = d.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let meta_text = std::fs::read_to_string(d.join("meta.json")).map_err(|e| format!("{name}: {e}"))?;
    let meta: Meta = serde_json::from_str(&meta_text).map_err(|e| format!("{name}/meta.json: {e}"))?;
    let (body, sse) = match std::fs::read(d.join("response.sse")) {
        Ok(b) => (b, true),
        Err(_) => (
            std::fs::read(d.join("response.json"))
                .map_err(|e| format!("{name}: no response.sse or response.json: {e}"))?,
            false,
        ),
    };
    if meta.capture.values().any(|c| c.after.is_empty()) {
        return Err(format!("{name}/meta.json: a capture's `after` is empty"));
    }
    if !meta.capture.is_empty() && std::str::from_utf8(&body).is_err() {
        return Err(format!("{name}: a fixture with captures needs a UTF-8 body"));
    }
    Ok(Fixture {
        name,
        meta,
        body,
        sse,
        answered: AtomicU64::new(0),
    })
}

/// The text after the last (ASCII case-insensitive) `after` up to the first `until` character;
/// `None` when `after` does not occur or the value is empty.
fn capture(text: &str, c: &Capture) -> Option<String> {
    // ASCII lowering keeps every byte offset, so positions found in `hay` are valid in `text`.
    let hay = text.to_ascii_lowercase();
    let start = hay.rfind(&c.after.to_ascii_lowercase())? + c.after.len();
    let rest = text.get(start..)?;
    let value = rest.split(|ch| c.until.contains(ch)).next().unwrap_or_default();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The body with every `{{NAME}}` replaced by its captured value, JSON-escaped.
fn fill<'a>(body: &'a [u8], values: &[(&str, String)]) -> Cow<'a, [u8]> {
    if values.is_empty() {
        return Cow::Borrowed(body);
    }
    let mut text = String::from_utf8_lossy(body).into_owned();
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), &json_escape(value));
    }
    Cow::Owned(text.into_bytes())
}

/// Escapes a value for use inside a JSON string.
fn json_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}
