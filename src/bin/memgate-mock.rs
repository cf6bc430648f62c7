//! memgate-mock: an upstream provider that answers from recorded fixtures.
//!
//! Tests, the SDK checks and the benchmark point memgate at it instead of a real provider.
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
//! the mock finds the last occurrence of `after` in the raw request body (ASCII case-insensitive);
//! the value is the text following it up to, not including, the first character listed in
//! `until` (or the end of the body; `until` defaults to empty). An empty value counts as not
//! found. A capture that is not found takes its `default` (a string; absent or `null` means none)
//! and, without one, the fixture does not match, so a later fixture (an "unknown" answer, say)
//! can. Every `{{NAME}}` in the answer's body (JSON or SSE) is replaced by the value of the capture
//! NAME, JSON-escaped, as the placeholder is meant to sit inside a JSON string. Bodies of fixtures
//! without captures are sent byte for byte.
//!
//! SSE bodies are sent one event at a time, `event_delay_ms` apart, each flushed as it goes.
//! Every request is recorded: `GET /__mock/requests` lists them (a streamed answer's entry
//! says whether the stream was sent to the end or abandoned by the client), `DELETE` clears.
//!
//! Usage: memgate-mock --dir fixtures/openai [--listen 127.0.0.1:0] [--tls CERT.pem KEY.pem];
//! prints its URL on stdout.

use futures_lite::AsyncReadExt;
use http_types::{Request, Response};
use memgate::http::{frame_channel, json_response, serve, sse_response, text_response, ServerOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    path: String,
    #[serde(default = "post")]
    method: String,
    #[serde(default, rename = "match")]
    needles: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    event_delay_ms: u64,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    capture: BTreeMap<String, Capture>,
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

fn post() -> String {
    "POST".to_owned()
}

fn ok() -> u16 {
    200
}

/// Requests kept for `GET /__mock/requests`; later ones are served but not recorded.
const MAX_RECORDED: usize = 1000;

struct Fixture {
    name: String,
    meta: Meta,
    body: Vec<u8>,
    sse: bool,
}

struct Mock {
    fixtures: Vec<Fixture>,
    seen: Mutex<Vec<Value>>,
}

fn load(dir: &Path) -> Result<Vec<Fixture>, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").exists())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|d| {
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
            Ok(Fixture { name, meta, body, sse })
        })
        .collect()
}

async fn answer(mock: Arc<Mock>, mut req: Request, peer: Option<std::net::SocketAddr>) -> Response {
    let mut body = Vec::new();
    let _ = req.take_body().read_to_end(&mut body).await;
    let path = req.url().path().to_owned();
    let method = req.method().to_string();
    if path == "/__mock/requests" {
        let mut seen = mock.seen.lock().unwrap_or_else(|p| p.into_inner());
        if method == "DELETE" {
            seen.clear();
        }
        return json_response(200, &Value::Array(seen.clone()));
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let headers: serde_json::Map<String, Value> = req
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.last().as_str().to_owned())))
        .collect();
    let matched = mock.fixtures.iter().find_map(|f| {
        let fits = f.meta.path == path
            && f.meta.method == method
            && f.meta.needles.iter().all(|n| text.contains(n.as_str()))
            && !f.meta.absent.iter().any(|n| text.contains(n.as_str()));
        if !fits {
            return None;
        }
        let values = f
            .meta
            .capture
            .iter()
            .map(|(name, c)| Some((name.as_str(), capture(&text, c).or_else(|| c.default.clone())?)))
            .collect::<Option<Vec<_>>>()?;
        Some((f, values))
    });
    let found = matched.as_ref().map(|(f, _)| *f);
    // Bounded, so a benchmark's load does not make the mock itself the thing measured.
    let index = {
        let mut seen = mock.seen.lock().unwrap_or_else(|p| p.into_inner());
        (seen.len() < MAX_RECORDED).then(|| {
            seen.push(json!({
                "method": method, "path": path, "headers": headers, "body": text,
                "fixture": found.map(|f| f.name.as_str()),
                // The client port tells tests whether requests shared a connection.
                "peer_port": peer.map(|p| p.port()),
            }));
            seen.len() - 1
        })
    };
    let Some((f, values)) = matched else {
        let err = json!({"error": {"message": format!("memgate-mock: no fixture matches {method} {path}"), "type": "invalid_request_error", "param": null, "code": "no_fixture"}});
        return json_response(404, &err);
    };
    if f.meta.delay_ms > 0 {
        smol::Timer::after(Duration::from_millis(f.meta.delay_ms)).await;
    }
    let filled = fill(&f.body, &values);
    let mut res = if f.sse && f.meta.status < 300 {
        let (tx, body) = frame_channel(4);
        let events = split_events(&filled);
        let gap = Duration::from_millis(f.meta.event_delay_ms);
        let mock = mock.clone();
        memgate::runtime::spawn(async move {
            let mut outcome = "complete";
            for (i, ev) in events.into_iter().enumerate() {
                if i > 0 && !gap.is_zero() {
                    smol::Timer::after(gap).await;
                }
                if tx.send(ev).await.is_err() {
                    outcome = "abandoned";
                    break;
                }
            }
            let mut seen = mock.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = index.and_then(|i| seen.get_mut(i)) {
                entry["stream"] = Value::String(outcome.to_owned());
            }
        })
        .detach();
        sse_response(body)
    } else {
        let ct = f.meta.content_type.as_deref().unwrap_or("application/json");
        text_response(f.meta.status, ct, filled.into_owned())
    };
    res.set_status(http_types::StatusCode::try_from(f.meta.status).unwrap_or(http_types::StatusCode::Ok));
    for (k, v) in &f.meta.headers {
        res.insert_header(k.as_str(), v.as_str().unwrap_or_default());
    }
    res
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

/// Splits raw SSE bytes into events, each keeping its own terminating blank line.
fn split_events(raw: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(raw);
    let sep = if text.contains("\r\n\r\n") { "\r\n\r\n" } else { "\n\n" };
    text.split_inclusive(sep)
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.as_bytes().to_vec())
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(dir) = arg("--dir") else {
        eprintln!("usage: memgate-mock --dir FIXTURE_DIR [--listen ADDR]");
        std::process::exit(2);
    };
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let fixtures = match load(Path::new(&dir)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("memgate-mock: {e}");
            std::process::exit(1);
        }
    };
    let tls = args.iter().position(|a| a == "--tls").map(|i| {
        let read = |k: usize| {
            let path = args.get(i + k).map(String::as_str).unwrap_or_default();
            std::fs::read(path).expect("--tls CERT.pem KEY.pem")
        };
        let identity = native_tls::Identity::from_pkcs8(&read(1), &read(2)).expect("PEM certificate and PKCS#8 key");
        async_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).expect("TLS acceptor"))
    });
    let mock = Arc::new(Mock {
        fixtures,
        seen: Mutex::new(Vec::new()),
    });
    memgate::runtime::block_on(async move {
        let listener = smol::net::TcpListener::bind(listen.as_str()).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let _ = writeln!(std::io::stdout(), "{scheme}://{addr}");
        let _ = std::io::stdout().flush();
        if let Some(acceptor) = tls {
            return serve_tls(listener, acceptor, mock).await;
        }
        let opts = ServerOptions {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
        };
        let (_stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        serve(
            listener,
            opts,
            move |req, peer| answer(mock.clone(), req, Some(peer.addr)),
            stop_rx,
        )
        .await;
    });
}

/// The HTTPS variant: plain async-h1 over each accepted TLS stream (no timeouts needed in a mock).
async fn serve_tls(listener: smol::net::TcpListener, acceptor: async_native_tls::TlsAcceptor, mock: Arc<Mock>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, mock) = (acceptor.clone(), mock.clone());
        memgate::runtime::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let io = async_dup::Arc::new(async_dup::Mutex::new(tls));
            let _ = async_h1::accept(io, |req| {
                let mock = mock.clone();
                async move { Ok(answer(mock, req, None).await) }
            })
            .await;
        })
        .detach();
    }
}
