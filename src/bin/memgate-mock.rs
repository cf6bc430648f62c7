//! memgate-mock: an upstream provider that answers from recorded fixtures.
//!
//! Tests, the SDK checks and the benchmark point memgate at it instead of a real provider.
//! The fixture format and how a request finds its fixture are described in
//! `memgate::providers::replay`, which the `replay` provider kind shares.
//!
//! SSE bodies are sent one event at a time, `event_delay_ms` apart, each flushed as it goes.
//! Every request is recorded: `GET /__mock/requests` lists them (a streamed answer's entry
//! says whether the stream was sent to the end or abandoned by the client), `DELETE` clears.
//!
//! With `--slots N` it serves N requests at a time, as a local model server does (llama-cpp-python
//! serves one): the others wait, and a streamed answer holds its slot until it was sent to the
//! end or the client went away (seen at the next event, as llama-cpp-python sees it).
//!
//! Usage: memgate-mock --dir fixtures/openai [--listen 127.0.0.1:0] [--tls CERT.pem KEY.pem]
//! [--slots N]; prints its URL on stdout.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use http_types::{Request, Response};
use memgate::http::{frame_channel, json_response, sse_response, text_response};
use memgate::providers::replay::Fixtures;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Requests kept for `GET /__mock/requests`; later ones are served but not recorded.
const MAX_RECORDED: usize = 1000;

struct Mock {
    fixtures: Fixtures,
    seen: Mutex<Vec<Value>>,
    /// `--slots`: how many answers are served at once.
    slots: Option<Arc<smol::lock::Semaphore>>,
}

async fn answer(mock: Arc<Mock>, mut req: Request, conn: Arc<ConnState>) -> Response {
    let peer = conn.peer;
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
    let matched = mock.fixtures.find(&method, &path, &text);
    let found = matched.as_ref().map(|(f, _)| *f);
    // Bounded, so a benchmark's load does not make the mock itself the thing measured.
    let index = {
        let mut seen = mock.seen.lock().unwrap_or_else(|p| p.into_inner());
        (seen.len() < MAX_RECORDED).then(|| {
            seen.push(json!({
                "method": method, "path": path, "query": req.url().query(), "headers": headers, "body": text,
                "fixture": found.map(|f| f.name.as_str()),
                // The client port tells tests whether requests shared a connection.
                "peer_port": peer.port(),
            }));
            seen.len() - 1
        })
    };
    let Some((f, values)) = matched else {
        let err = json!({"error": {"message": format!("memgate-mock: no fixture matches {method} {path}"), "type": "invalid_request_error", "param": null, "code": "no_fixture"}});
        return json_response(404, &err);
    };
    let slot = match &mock.slots {
        Some(s) => Some(s.acquire_arc().await),
        None => None,
    };
    if f.meta.delay_ms > 0 {
        smol::Timer::after(Duration::from_millis(f.meta.delay_ms)).await;
    }
    let filled = f.body(&values);
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
            drop(slot);
            let mut seen = mock.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = index.and_then(|i| seen.get_mut(i)) {
                entry["stream"] = Value::String(outcome.to_owned());
            }
        })
        .detach();
        sse_response(body)
    } else {
        text_response(f.meta.status, f.content_type(), filled.into_owned())
    };
    match http_types::StatusCode::try_from(f.meta.status) {
        Ok(code) => res.set_status(code),
        // http-types has no name for it (Anthropic's 529): the status line is rewritten on the wire.
        Err(_) => {
            res.set_status(http_types::StatusCode::InternalServerError);
            conn.raw_status.store(f.meta.status, Ordering::Relaxed);
        }
    }
    for (k, v) in &f.meta.headers {
        res.insert_header(k.as_str(), v.as_str().unwrap_or_default());
    }
    res
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
    let fixtures = match Fixtures::load(Path::new(&dir)) {
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
    let slots = arg("--slots").map(|n| match n.parse::<usize>() {
        Ok(n) if n > 0 => Arc::new(smol::lock::Semaphore::new(n)),
        _ => {
            eprintln!("memgate-mock: --slots takes a number above 0");
            std::process::exit(2);
        }
    });
    let mock = Arc::new(Mock {
        fixtures,
        seen: Mutex::new(Vec::new()),
        slots,
    });
    memgate::runtime::block_on(async move {
        let listener = smol::net::TcpListener::bind(listen.as_str()).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let _ = writeln!(std::io::stdout(), "{scheme}://{addr}");
        let _ = std::io::stdout().flush();
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let (tls, mock) = (tls.clone(), mock.clone());
            memgate::runtime::spawn(async move {
                let state = Arc::new(ConnState {
                    peer,
                    raw_status: AtomicU16::new(0),
                });
                let handler = |req| {
                    let (mock, state) = (mock.clone(), state.clone());
                    async move { Ok(answer(mock, req, state).await) }
                };
                let _ = match tls {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else { return };
                        async_h1::accept(Raw::shared(stream, state.clone()), handler).await
                    }
                    None => async_h1::accept(Raw::shared(tcp, state.clone()), handler).await,
                };
            })
            .detach();
        }
    });
}

/// What one client connection's handler and its IO share.
struct ConnState {
    peer: SocketAddr,
    /// A status to write in place of the next response's (a code http-types cannot name).
    raw_status: AtomicU16,
}

/// A connection whose next status line can carry a code http-types has no name for.
struct Raw<S> {
    io: S,
    state: Arc<ConnState>,
}

impl<S> Raw<S> {
    fn shared(io: S, state: Arc<ConnState>) -> async_dup::Arc<async_dup::Mutex<Raw<S>>> {
        async_dup::Arc::new(async_dup::Mutex::new(Raw { io, state }))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Raw<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Raw<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let code = self.state.raw_status.load(Ordering::Relaxed);
        if code != 0 && buf.len() >= 12 && buf.starts_with(b"HTTP/1.1 ") {
            let mut head = buf.to_vec();
            head[9..12].copy_from_slice(code.to_string().as_bytes());
            let r = Pin::new(&mut self.io).poll_write(cx, &head);
            if matches!(r, Poll::Ready(Ok(_))) {
                self.state.raw_status.store(0, Ordering::Relaxed);
            }
            return r;
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}
