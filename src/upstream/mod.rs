//! The client side: HTTP/1.1 to providers over TCP or TLS, with a connection pool and timeouts.
//!
//! async-h1 encodes the request; the response is decoded by [`h1`], never by async-h1 (whose
//! client decoder panics on hostile heads). This module keeps idle connections per host and
//! hands one back only after its response body was read to its framed end.
//! A pooled connection the server closed meanwhile is detected (a non-blocking peek sees EOF) or,
//! if it closes in the race, the request is sent once more on a fresh connection: nothing was
//! delivered upstream in either case.

mod conn;
mod h1;
mod pool;
pub mod retry;
pub mod slots;

use crate::budget::Budget;
use crate::config::{LimitsConfig, Timeouts};
use crate::error::ApiError;
use crate::http::sse;
use conn::Conn;
use futures_lite::{future, io::BufReader, AsyncRead, AsyncReadExt};
use http_types::{Body, Method, Request, Url};
use pool::{Pool, PoolKey};
use slots::Slot;
use smol::Timer;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// A request to a provider, built by an adapter. Its Debug hides the credential headers.
#[derive(Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Set for memory's own calls: to an upstream with `slots`, the call gives way to a
    /// client's request that finds them all taken, this long after it is asked.
    pub gives_way: Option<Duration>,
}

impl std::fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| match *k {
                "authorization" | "x-api-key" | "x-goog-api-key" => (*k, "<redacted>"),
                _ => (*k, v.as_str()),
            })
            .collect();
        f.debug_struct("UpstreamRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .field("gives_way", &self.gives_way)
            .finish()
    }
}

/// The shared client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pool: Arc<Pool>,
    timeouts: Arc<Timeouts>,
    bounds: Bounds,
    /// `[limits] max_buffered_bytes`, shared with the request bodies the API reads.
    budget: Budget,
}

/// How much of an upstream answer is read (`[limits]`).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// A non-streamed body, whole.
    body: u64,
    /// One SSE line or event.
    sse_event: usize,
}

impl Client {
    pub fn new(timeouts: Timeouts, limits: &LimitsConfig) -> Self {
        Client {
            pool: Arc::new(Pool::default()),
            timeouts: Arc::new(timeouts),
            bounds: Bounds {
                body: limits.upstream_body_bytes(),
                sse_event: usize::try_from(limits.sse_event_bytes()).unwrap_or(usize::MAX),
            },
            budget: Budget::new(limits.buffered_bytes()),
        }
    }

    /// The buffer budget every body memgate holds counts against.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Sends a request and returns once the response head arrived; the body streams.
    pub async fn send(&self, req: &UpstreamRequest) -> Result<UpstreamResponse, ApiError> {
        let url =
            Url::parse(&req.url).map_err(|e| ApiError::bad_gateway(format!("bad upstream URL {}: {e}", req.url)))?;
        let key =
            PoolKey::from_url(&url).ok_or_else(|| ApiError::bad_gateway(format!("bad upstream URL {}", req.url)))?;
        // Header values are written verbatim: a CR or LF would inject headers upstream, and a
        // non-ASCII byte makes http-types panic. Keys (configured or BYOK) are the values at risk.
        if let Some((name, _)) = req.headers.iter().find(|(_, v)| !h1::is_field_value(v.as_bytes())) {
            return Err(ApiError::bad_gateway(format!(
                "the {name} header for {} holds a byte HTTP forbids (CR, LF, NUL or non-ASCII); check the provider key",
                key.origin()
            )));
        }
        // A pooled connection may have been closed by the server a moment ago: one fresh retry.
        // Only a connection failure is retried: after a timeout the upstream may be working on
        // the request, and sending it again would pay for the answer twice.
        let first = match self.pool.take(&key) {
            Some(conn) => self.exchange(conn, &key, &url, req).await,
            None => Err(Exchange::Lost(String::new())),
        };
        let result = match first {
            Err(Exchange::Lost(_)) => self.exchange(self.connect(&key).await?, &key, &url, req).await,
            other => other,
        };
        result.map_err(|e| match e {
            Exchange::Timeout => ApiError::gateway_timeout(format!(
                "{} sent no response within {} ms (timeouts.first_byte_ms)",
                key.origin(),
                self.timeouts.first_byte_ms
            )),
            Exchange::Lost(m) => ApiError::bad_gateway(format!("{} failed: {m}", key.origin())),
            Exchange::Malformed(m) => bad_response(format!("{} {m}", key.origin())),
        })
    }

    async fn connect(&self, key: &PoolKey) -> Result<Conn, ApiError> {
        let limit = Duration::from_millis(self.timeouts.connect_ms);
        let connecting = async { Some(Conn::open(key).await) };
        match future::or(connecting, sleep_none(limit)).await {
            Some(Ok(c)) => Ok(c),
            Some(Err(e)) => Err(ApiError::bad_gateway(format!("cannot reach {}: {e}", key.origin()))),
            None => Err(ApiError::gateway_timeout(format!(
                "connecting to {} took over {} ms (timeouts.connect_ms)",
                key.origin(),
                self.timeouts.connect_ms
            ))),
        }
    }

    async fn exchange(
        &self,
        conn: Conn,
        key: &PoolKey,
        url: &Url,
        req: &UpstreamRequest,
    ) -> Result<UpstreamResponse, Exchange> {
        let mut http = Request::new(req.method, url.clone());
        for (k, v) in &req.headers {
            http.insert_header(*k, v.as_str());
        }
        if req.method != Method::Get {
            http.set_body(Body::from_bytes(req.body.clone()));
            http.insert_header("content-type", "application/json");
        }
        let limit = Duration::from_millis(self.timeouts.first_byte_ms);
        let origin = key.origin();
        let sending = async { Some(send_once(conn.clone(), http, &origin).await) };
        let (head, buf) = match future::or(sending, sleep_none(limit)).await {
            None => return Err(Exchange::Timeout),
            Some(r) => r?,
        };
        let content_type = head.header("content-type").unwrap_or_default().to_owned();
        let retry_after = retry::after(head.header("retry-after-ms"), head.header("retry-after"));
        let declared = match head.framing {
            h1::Framing::Length(n) => Some(n),
            _ => None,
        };
        let body = PooledBody {
            source: Source::Net(Box::new(h1::Body::new(conn.clone(), buf, head.framing))),
            home: head.reusable.then(|| Home {
                conn,
                key: key.clone(),
                pool: self.pool.clone(),
            }),
        };
        Ok(UpstreamResponse {
            status: head.status,
            content_type,
            retry_after,
            body,
            declared,
            bounds: self.bounds,
            budget: Some(self.budget.clone()),
            idle: Duration::from_millis(self.timeouts.idle_ms),
            origin,
            slot: None,
        })
    }
}

enum Exchange {
    Timeout,
    /// The connection failed before any answer: safe to send again on a fresh one.
    Lost(String),
    /// The upstream answered with something that is not a response we accept.
    Malformed(String),
}

/// A 502 for an upstream that answered, but unusably. Not `bad_gateway`: that code is
/// retried, and this upstream already processed (and may have billed) the request.
fn bad_response(message: String) -> ApiError {
    ApiError::new(502, "upstream_error", Some("bad_response"), message)
}

/// Writes the request (head and body: always sized here) in one write, then reads the head.
/// async-h1's own `connect` writes head and body apart: two packets where one does.
async fn send_once(mut conn: Conn, req: Request, origin: &str) -> Result<(h1::Head, h1::Buf), Exchange> {
    use futures_lite::AsyncWriteExt;
    let mut bytes = Vec::with_capacity(512 + req.len().unwrap_or(0));
    async_h1::client::Encoder::new(req)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| Exchange::Lost(e.to_string()))?;
    conn.write_all(&bytes)
        .await
        .map_err(|e| Exchange::Lost(e.to_string()))?;
    let mut buf = h1::Buf::default();
    match h1::read_head(&mut conn, &mut buf, origin).await {
        Ok(head) => Ok((head, buf)),
        Err(h1::HeadError::Lost(m)) => Err(Exchange::Lost(m)),
        Err(h1::HeadError::Malformed(m)) => Err(Exchange::Malformed(m)),
    }
}

async fn sleep_none<T>(d: Duration) -> Option<T> {
    Timer::after(d).await;
    None
}

/// `None` after `idle`, or once the memory call holding `slot` must give way.
async fn idle_or_given_way<T>(idle: Duration, slot: Option<&Slot>) -> Option<T> {
    let given_way = async {
        match slot {
            Some(s) => s.given_way().await,
            None => std::future::pending().await,
        }
        None
    };
    future::or(sleep_none(idle), given_way).await
}

/// A memory call ended to free its upstream slot for a client's request (see [`slots`]).
pub fn gave_way(origin: &str) -> ApiError {
    ApiError::new(
        503,
        "server_error",
        Some(GAVE_WAY),
        format!("a memory call to {origin} gave way to a client's request (all its slots were taken)"),
    )
}

/// The error code of [`gave_way`].
pub const GAVE_WAY: &str = "gave_way";

/// A provider's response whose body has not been read yet.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: String,
    /// How long the upstream asked us to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
    body: PooledBody,
    /// The body's `Content-Length`, when it has one.
    declared: Option<u64>,
    bounds: Bounds,
    /// What the body's buffer is held from while it is read (none for a replayed fixture,
    /// which is in memory already).
    budget: Option<Budget>,
    idle: Duration,
    origin: String,
    /// The upstream slot the request holds until its body is read or dropped.
    slot: Option<Slot>,
}

impl UpstreamResponse {
    /// A response that did not come over the network (a replayed fixture).
    pub fn from_bytes(status: u16, content_type: &str, body: Vec<u8>, origin: &str) -> UpstreamResponse {
        let limits = LimitsConfig::default();
        UpstreamResponse {
            declared: Some(body.len() as u64),
            bounds: Bounds {
                body: limits.upstream_body_bytes().max(body.len() as u64),
                sse_event: usize::MAX,
            },
            budget: None,
            status,
            content_type: content_type.to_owned(),
            retry_after: None,
            body: PooledBody {
                source: Source::Bytes(futures_lite::io::Cursor::new(body)),
                home: None,
            },
            idle: Duration::from_secs(60),
            origin: origin.to_owned(),
            slot: None,
        }
    }

    /// The response holding `slot` until its body is read or dropped.
    pub fn holding(mut self, slot: Option<Slot>) -> UpstreamResponse {
        self.slot = slot;
        self
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn is_event_stream(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }

    /// Reads the whole body, up to `[limits] max_upstream_body_bytes`; each read must arrive
    /// within the idle timeout.
    pub async fn bytes(mut self) -> Result<Vec<u8>, ApiError> {
        let max = self.bounds.body;
        let origin = self.origin.clone();
        let too_big = || {
            bad_response(format!(
                "{origin} sent a body over {max} bytes (limits.max_upstream_body_bytes)"
            ))
        };
        if self.declared.is_some_and(|n| n > max) {
            return Err(too_big());
        }
        // Whole up to the bound: growth never overshoots it (no doubling past it).
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        // Held while the body is read (a slow upstream may take long); parsing follows at once.
        let mut hold = self.budget.as_ref().map(Budget::hold);
        let mut fits = |len: usize| hold.as_mut().is_none_or(|h| h.resize(len as u64));
        if !fits(self.declared.map_or(0, |n| n as usize)) {
            return Err(self.over_budget());
        }
        let mut out = Vec::with_capacity(self.declared.map_or(0, |n| n as usize));
        let mut chunk = vec![0u8; 16 << 10];
        let slot = self.slot.take();
        loop {
            let read = async { Some(self.body.read(&mut chunk).await) };
            match future::or(read, idle_or_given_way(self.idle, slot.as_ref())).await {
                None if slot.as_ref().is_some_and(Slot::has_given_way) => return Err(gave_way(&self.origin)),
                None => {
                    return Err(ApiError::gateway_timeout(format!(
                        "{} stalled mid-response",
                        self.origin
                    )))
                }
                // The body's framing was broken (h1's decoder): a malformed answer, as a bad head.
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(bad_response(format!("{} sent a malformed body: {e}", self.origin)))
                }
                Some(Err(e)) => {
                    return Err(ApiError::bad_gateway(format!(
                        "{} response broke off: {e}",
                        self.origin
                    )))
                }
                Some(Ok(0)) => return Ok(out),
                Some(Ok(n)) if n > max - out.len() => return Err(too_big()),
                Some(Ok(n)) if !fits(out.len() + n) => return Err(self.over_budget()),
                Some(Ok(n)) => {
                    if out.capacity() - out.len() < n {
                        let target = (out.capacity() * 2).clamp(out.len() + n, max);
                        out.reserve_exact(target - out.len());
                    }
                    out.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    fn over_budget(&self) -> ApiError {
        let budget = self.budget.as_ref().map_or(0, Budget::total);
        ApiError::new(
            503,
            "server_error",
            Some("overloaded"),
            format!(
                "{} answered, but memgate holds {budget} bytes of bodies already ([limits] max_buffered_bytes); retry shortly",
                self.origin
            ),
        )
    }

    /// The body as a stream of server-sent events, each line and event bounded by
    /// `[limits] max_sse_event_bytes` and held from the buffer budget past its first 64 KiB.
    pub fn events(self) -> EventStream {
        let reader = sse::Reader::new(BufReader::new(self.body), self.bounds.sse_event);
        EventStream {
            reader: match self.budget {
                Some(b) => reader.with_budget(b.hold()),
                None => reader,
            },
            idle: self.idle,
            origin: self.origin,
            slot: self.slot,
        }
    }
}

/// Upstream SSE events with the per-event idle timeout applied.
#[derive(Debug)]
pub struct EventStream {
    reader: sse::Reader<BufReader<PooledBody>>,
    idle: Duration,
    origin: String,
    slot: Option<Slot>,
}

impl EventStream {
    /// Whether the stream ended because its memory call gave way to a client's request.
    pub fn gave_way(&self) -> bool {
        self.slot.as_ref().is_some_and(Slot::has_given_way)
    }

    /// The next event; `Ok(None)` at a clean end of stream, `Err` (a message) when the stream
    /// broke off, fell silent for longer than the idle timeout, or gave way.
    pub async fn next(&mut self) -> Result<Option<sse::Event>, String> {
        let read = async { Some(self.reader.next().await) };
        match future::or(read, idle_or_given_way(self.idle, self.slot.as_ref())).await {
            None if self.gave_way() => Err(gave_way(&self.origin).message),
            None => Err(format!(
                "{} sent nothing for {} ms (timeouts.idle_ms)",
                self.origin,
                self.idle.as_millis()
            )),
            Some(Err(e)) => Err(format!("{} stream broke off: {e}", self.origin)),
            Some(Ok(ev)) => Ok(ev),
        }
    }
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    source: Source,
    /// `None` when the connection cannot carry another request (close-framed, `Connection:
    /// close`, ambiguous framing), or when there is none (a replayed fixture).
    home: Option<Home>,
}

enum Source {
    Net(Box<h1::Body<Conn>>),
    Bytes(futures_lite::io::Cursor<Vec<u8>>),
}

/// Where a connection goes back to.
struct Home {
    conn: Conn,
    key: PoolKey,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("key", &self.home.as_ref().map(|h| &h.key))
            .finish()
    }
}

impl AsyncRead for PooledBody {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let (r, clean) = match &mut this.source {
            Source::Net(body) => {
                let r = Pin::new(&mut **body).poll_read(cx, buf);
                (r, body.ended_clean())
            }
            Source::Bytes(c) => (Pin::new(c).poll_read(cx, buf), false),
        };
        match &r {
            Poll::Ready(Ok(0)) if !buf.is_empty() => {
                if let Some(h) = this.home.take().filter(|_| clean) {
                    h.pool.put(h.key, h.conn);
                }
            }
            Poll::Ready(Err(_)) => this.home = None,
            _ => {}
        }
        r
    }
}
