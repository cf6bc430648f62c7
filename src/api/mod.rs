//! The API surface: which path does what, who may call it, and one log line per request.
//!
//! Handlers return `Result<Response, ApiError>`; this module renders every error in OpenAI's
//! shape, because async-h1 sends nothing at all for a handler error.

mod chat;
mod chunks;
mod dashboard;
mod embeddings;
#[cfg(test)]
mod fuzz;
mod memory;
mod messages;
mod models;
mod relay;
mod responses;
mod responses_chat;
mod usage_report;

use crate::app::App;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::http::{error_response, json_response, read_body, text_response, Peer};
use crate::ir::{Rest, Usage};
use crate::limits::{self, Limits};
use crate::memory::{Payer, ThreadRef};
use crate::metrics::RequestEnd;
use crate::store::usage::Counts;
use crate::usage;

use crate::router::{first_answer, Candidate};
use crate::upstream::{UpstreamRequest, UpstreamResponse};
use futures_lite::future;
use http_types::{Method, Request, Response};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Instant;

/// What one request carries through the handlers.
pub(crate) struct Ctx {
    pub app: Arc<App>,
    pub peer: Peer,
    pub caller: Caller,
    /// The thread named by `x-thread-id` / `x-resource-id`, for endpoints with memory.
    pub thread: Option<ThreadRef>,
    /// Taken by a streaming handler, which finishes it when the stream ends.
    pub log: Option<AccessLog>,
}

impl Ctx {
    /// Whom the memory runs this request starts serve and are charged to: the caller's tenant,
    /// within its limits.
    pub fn payer(&self) -> Payer {
        Payer {
            tenant: self.caller.tenant.clone(),
            limits: self.caller.limits_or(self.app.default_limits),
        }
    }
}

/// The one line logged per request, which also feeds usage accounting and metrics. Never holds
/// a key or a message body.
#[derive(Debug)]
pub(crate) struct AccessLog {
    app: Arc<App>,
    method: Method,
    path: String,
    /// The path's route template, for metrics (the path itself may hold ids: not a label).
    route: &'static str,
    /// The gateway key's name, once authenticated.
    pub tenant: String,
    pub model: String,
    /// The provider that answered.
    pub provider: String,
    /// The request's `user` and `tags`, for usage.
    pub user: String,
    pub tags: String,
    /// The caller's rate limits, charged with the answer's tokens.
    pub limits: Limits,
    pub usage: Option<Usage>,
    /// Whether `usage` is memgate's estimate: the upstream reported none.
    pub estimated: bool,
    /// How a streamed answer ended: complete, client-disconnected or interrupted.
    pub stream: Option<&'static str>,
    /// Upstream attempts, retries included (0: none was needed).
    pub attempts: u32,
    /// The fallback that answered, when the first route did not.
    pub via: Option<String>,
    start: Instant,
}

impl AccessLog {
    pub fn finish(self, status: u16) {
        let (p, c) = self
            .usage
            .as_ref()
            .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let routed = !self.provider.is_empty();
        let model = if routed {
            self.via.as_deref().unwrap_or(&self.model)
        } else {
            ""
        };
        self.app.metrics.ended(&RequestEnd {
            route: self.route,
            model,
            status,
            latency: self.start.elapsed(),
            prompt_tokens: p,
            completion_tokens: c,
            estimated: self.estimated,
            retries: self.attempts.saturating_sub(1),
            fell_back: self.via.is_some(),
        });
        if let Some(u) = &self.usage {
            self.app.limiter.charge(&self.tenant, self.limits, u.total_tokens);
        }
        let total = self.usage.as_ref().map_or(0, |u| u.total_tokens);
        if routed {
            self.app.usage.record(usage::Entry {
                key: self.tenant.clone(),
                provider: self.provider.clone(),
                model: self.via.clone().unwrap_or_else(|| self.model.clone()),
                user: self.user.clone(),
                tags: self.tags.clone(),
                counts: Counts {
                    requests: 1,
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: total,
                    estimated_tokens: if self.estimated { total } else { 0 },
                    memory_tokens: 0,
                },
            });
        }
        log::info!(
            target: "memgate::access",
            "{} {} model={} status={} ms={:.1} tokens={}+{}{}{}{}{}",
            self.method,
            self.path,
            if self.model.is_empty() { "-" } else { &self.model },
            status,
            self.start.elapsed().as_secs_f64() * 1000.0,
            p,
            c,
            if self.estimated { " usage=estimated" } else { "" },
            self.stream.map_or(String::new(), |s| format!(" stream={s}")),
            if self.attempts > 1 { format!(" attempts={}", self.attempts) } else { String::new() },
            self.via.as_ref().map_or(String::new(), |v| format!(" via={v}")),
        );
    }
}

/// Serves one request; never fails (errors become OpenAI-shaped bodies).
pub async fn handle(app: Arc<App>, mut req: Request, peer: Peer) -> Response {
    // Health checks come every few seconds from a supervisor: not worth a log line each.
    let mut log = (req.url().path() != "/healthz").then(|| {
        app.metrics.started();
        AccessLog {
            app: app.clone(),
            method: req.method(),
            path: req.url().path().to_owned(),
            route: route_label(req.url().path()),
            tenant: String::new(),
            model: String::new(),
            provider: String::new(),
            user: String::new(),
            tags: String::new(),
            limits: Limits::default(),
            usage: None,
            estimated: false,
            stream: None,
            attempts: 0,
            via: None,
            start: Instant::now(),
        }
    });
    let mut headers = limits::Headers::new();
    // Probes and scrapes are answered even at the limit: they are how an operator sees it.
    let probe = matches!(req.url().path(), "/healthz" | "/metrics");
    let page = dashboard::find(req.url().path()).is_some();
    let served = match app.browsers.check(&req, page) {
        // Before any route, probes included: a page elsewhere may neither read nor write.
        Err((why, e)) => {
            app.metrics.rejected(why);
            Err(e)
        }
        Ok(()) => match (!probe).then(|| overloaded(&app)).flatten() {
            Some(e) => {
                headers.push(("retry-after", "1".to_owned()));
                Err(e)
            }
            None => dispatch(&app, &mut req, peer, &mut log, &mut headers).await,
        },
    };
    let (mut res, status) = match served {
        Ok(res) => {
            let status = res.status().into();
            (res, status)
        }
        Err(e) => (render_error(req.url().path(), &e), e.status),
    };
    for (k, v) in headers {
        res.insert_header(k, v);
    }
    // A streaming handler took the log and finishes it when the stream ends.
    if let Some(log) = log {
        log.finish(status);
    }
    res
}

/// A fast 503 when `[limits] max_in_flight` requests are already being served: a queue that
/// grows without bound helps no one.
fn overloaded(app: &App) -> Option<ApiError> {
    let max = app.max_in_flight?;
    // This request is already counted.
    if app.metrics.in_flight() <= i64::try_from(max).unwrap_or(i64::MAX) {
        return None;
    }
    app.metrics.rejected("overloaded");
    Some(ApiError::new(
        503,
        "server_error",
        Some("overloaded"),
        format!("memgate is serving its limit of {max} requests ([limits] max_in_flight); retry shortly"),
    ))
}

async fn dispatch(
    app: &Arc<App>,
    req: &mut Request,
    peer: Peer,
    log: &mut Option<AccessLog>,
    headers: &mut limits::Headers,
) -> Result<Response, ApiError> {
    let method = req.method();
    let path = req.url().path().to_owned();
    if path == "/healthz" {
        // A store that cannot write fails every memory request: say so to the supervisor.
        return Ok(match app.store.health().await {
            Ok(()) => json_response(200, &serde_json::json!({"status": "ok"})),
            Err(reason) => json_response(503, &serde_json::json!({"status": "unavailable", "reason": reason})),
        });
    }
    if path == "/metrics" {
        if method != Method::Get {
            return Err(ApiError::method_not_allowed(method.as_ref(), &path));
        }
        if app.metrics_need_key {
            auth::authenticate(app.auth, &app.store, req)?;
        }
        let text = app.metrics.render(app.store.file_size());
        return Ok(text_response(200, "text/plain; version=0.0.4; charset=utf-8", text));
    }
    // The dashboard's files hold no data (the page fetches it with the user's key): no key here.
    if let Some(asset) = dashboard::find(&path) {
        return dashboard::serve(method, &path, asset);
    }
    let route = Endpoint::find(&path).ok_or_else(|| {
        ApiError::not_found(format!(
            "no route for {path}; the API lives under /v1 and the dashboard at /ui"
        ))
    })?;
    if route.method().is_some_and(|m| m != method) {
        return Err(ApiError::method_not_allowed(method.as_ref(), &path));
    }
    let caller = auth::authenticate(app.auth, &app.store, req)?;
    let limits = caller.limits_or(app.default_limits);
    if let Some(log) = log.as_mut() {
        log.tenant.clone_from(&caller.tenant);
        log.limits = limits;
    }
    let (h, refused) = app.limiter.admit(&caller.tenant, limits);
    headers.extend(h);
    if let Some(e) = refused {
        app.metrics.rejected("rate_limited");
        return Err(e);
    }
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    let thread = ThreadRef::from_headers(header("x-thread-id").as_deref(), header("x-resource-id").as_deref())?;
    let mut ctx = Ctx {
        app: app.clone(),
        peer,
        caller,
        thread,
        log: log.take(),
    };
    let result = serve(&mut ctx, route, req).await;
    *log = ctx.log.take();
    result
}

/// Runs an authenticated request's endpoint.
async fn serve(ctx: &mut Ctx, route: Endpoint, req: &mut Request) -> Result<Response, ApiError> {
    // `_held`: the body's bytes stay counted in the buffer budget until it is dropped.
    let (body, _held) = match route {
        Endpoint::Models => return Ok(models::list(ctx).await),
        Endpoint::Usage => return usage_report::get(ctx, &query(req)).await,
        Endpoint::Model(id) => return models::get(ctx, &id).await,
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages | Endpoint::Embeddings | Endpoint::Memory(_) => {
            match read_body(req, ctx.app.max_body, ctx.app.body_timeout, ctx.app.client.budget()).await {
                Ok(read) => read,
                // The rest of an oversized or stalled body is still on the wire: answer and close.
                Err(e) => {
                    let mut res = render_error(req.url().path(), &e);
                    res.insert_header("connection", "close");
                    return Ok(res);
                }
            }
        }
    };
    if !body.is_empty() {
        check_content_type(req)?;
    }
    if let Endpoint::Memory(rest) = &route {
        return memory::handle(ctx, req.method(), rest, &query(req), &body).await;
    }
    // A client that hangs up while the upstream works (a slow model, a big batch) drops the
    // handler, and with it the upstream request. Streams watch for this themselves.
    let peer = ctx.peer.clone();
    let gone = async {
        peer.closed().await;
        Err(ApiError::new_status(499, "client closed the connection"))
    };
    let work = async {
        match route {
            Endpoint::Chat => chat::handle(ctx, &body).await,
            Endpoint::Responses => responses::handle(ctx, &body).await,
            Endpoint::Messages => messages::handle(ctx, &body).await,
            _ => embeddings::handle(ctx, &body).await,
        }
    };
    future::or(work, gone).await
}

/// The request's query parameters (the last of a repeated one wins).
fn query(req: &Request) -> std::collections::HashMap<String, String> {
    req.url()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Refuses a body declared as anything but JSON (415).
///
/// Browsers send `text/plain` and form bodies cross-origin without a CORS preflight, so taking
/// them would let any web page drive a gateway on loopback (spend tokens, write into memory).
/// A body with no Content-Type is still read as JSON: hand-written clients omit it (async-h1
/// reports a missing one as `application/octet-stream`). A browser sends one without a
/// preflight too (a `no-cors` fetch of a Blob), but always with `Origin`, which
/// [`crate::http::BrowserPolicy`] has refused by then unless it is the gateway's own.
fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let declared = req.header("content-type").map_or("", |v| v.last().as_str());
    let media = declared.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = media.ends_with("+json") || media == "application/json";
    if json || media.is_empty() || media == "application/octet-stream" {
        return Ok(());
    }
    Err(ApiError::new(
        415,
        "invalid_request_error",
        Some("unsupported_media_type"),
        format!("request body is {media:?}; send JSON with `Content-Type: application/json`"),
    ))
}

/// An error in the shape the endpoint's clients read: Anthropic's on `/v1/messages`, OpenAI's
/// everywhere else.
fn render_error(path: &str, e: &ApiError) -> Response {
    if path == "/v1/messages" {
        json_response(e.status, &crate::wire::anthropic::error_body(e))
    } else {
        error_response(e)
    }
}

/// The route template a path matches, as a metrics label: `/v1/memory/threads/{id}`, never the
/// id itself (`/metrics` is readable without a key), and `other` for every path that matches no
/// route, so that no client can mint series.
fn route_label(path: &str) -> &'static str {
    if let Some(asset) = dashboard::find(path) {
        return asset.name;
    }
    let Some(route) = Endpoint::find(path) else {
        return match path {
            "/metrics" => "/metrics",
            "/healthz" => "/healthz",
            _ => "other",
        };
    };
    match route {
        Endpoint::Chat => "/v1/chat/completions",
        Endpoint::Responses => "/v1/responses",
        Endpoint::Messages => "/v1/messages",
        Endpoint::Embeddings => "/v1/embeddings",
        Endpoint::Models => "/v1/models",
        Endpoint::Model(_) => "/v1/models/{id}",
        Endpoint::Usage => "/v1/usage",
        Endpoint::Memory(rest) => {
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                ["threads"] => "/v1/memory/threads",
                ["threads", _] => "/v1/memory/threads/{id}",
                ["threads", _, "messages"] => "/v1/memory/threads/{id}/messages",
                ["threads", _, "observations"] => "/v1/memory/threads/{id}/observations",
                ["threads", _, "observations", "record"] => "/v1/memory/threads/{id}/observations/record",
                ["threads", _, "observations", "history"] => "/v1/memory/threads/{id}/observations/history",
                ["threads", _, "observations", "config"] => "/v1/memory/threads/{id}/observations/config",
                ["resources", _] => "/v1/memory/resources/{id}",
                _ => "other",
            }
        }
    }
}

enum Endpoint {
    Chat,
    Responses,
    /// Anthropic's Messages API.
    Messages,
    Embeddings,
    Models,
    Model(String),
    Usage,
    /// Everything under `/v1/memory/` (the rest of the path); it checks its own methods.
    Memory(String),
}

impl Endpoint {
    fn find(path: &str) -> Option<Endpoint> {
        Some(match path {
            "/v1/chat/completions" => Endpoint::Chat,
            "/v1/responses" => Endpoint::Responses,
            "/v1/messages" => Endpoint::Messages,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/models" => Endpoint::Models,
            "/v1/usage" => Endpoint::Usage,
            _ if path.starts_with("/v1/memory/") => Endpoint::Memory(path["/v1/memory/".len()..].to_owned()),
            _ => Endpoint::Model(path.strip_prefix("/v1/models/").filter(|m| !m.is_empty())?.to_owned()),
        })
    }

    fn method(&self) -> Option<Method> {
        match self {
            Endpoint::Models | Endpoint::Model(_) | Endpoint::Usage => Some(Method::Get),
            Endpoint::Memory(_) => None,
            _ => Some(Method::Post),
        }
    }
}

/// Routes the request's model with its fallbacks: logs the name the client asked for, takes
/// the request's fallback fields out of `rest`, and returns the asked name with the candidates
/// (the first one's upstream model name is already in `model`).
pub(crate) fn routes(ctx: &mut Ctx, model: &mut String, rest: &mut Rest) -> Result<(String, Vec<Candidate>), ApiError> {
    let asked = std::mem::take(model);
    if let Some(log) = &mut ctx.log {
        log.model.clone_from(&asked);
    }
    let candidates = ctx.app.router().candidates(&asked, rest)?;
    model.clone_from(&candidates[0].route.model);
    // `tags` is memgate's (usage); `user` is OpenAI's and goes on as well.
    let tags = rest.remove("tags");
    let user = rest
        .get("user")
        .or_else(|| rest.get("metadata").and_then(|m| m.get("user_id")))
        .and_then(|u| u.as_str());
    // Both are kept in every usage row: refused over their caps rather than stored.
    crate::store::quota::check_usage_fields(user, tags.as_ref()).map_err(memory::cap_error)?;
    if let Some(log) = &mut ctx.log {
        log.tags = usage::tags(tags.as_ref());
        log.user = user.unwrap_or_default().to_owned();
    }
    Ok((asked, candidates))
}

/// Sends the request `build` makes for each candidate until one answers (retries and fallbacks:
/// [`first_answer`]); the log line notes the attempts and the fallback that answered.
pub(crate) async fn send<'c>(
    ctx: &mut Ctx,
    candidates: &'c [Candidate],
    build: impl FnMut(&Candidate) -> Result<UpstreamRequest, ApiError>,
) -> Result<(UpstreamResponse, &'c Candidate), ApiError> {
    let started = Instant::now();
    let sent = first_answer(&ctx.app.client, &ctx.app.retry, candidates, build).await;
    if let Ok(a) = &sent {
        ctx.app
            .metrics
            .upstream(&a.candidate.route.provider.name, started.elapsed());
    }
    if let (Some(log), Ok(a)) = (&mut ctx.log, &sent) {
        log.attempts = a.attempts;
        log.provider.clone_from(&a.candidate.route.provider.name);
        if !std::ptr::eq(a.candidate, &candidates[0]) {
            log.via = Some(a.candidate.name.clone());
        }
    }
    sent.map(|a| (a.response, a.candidate))
}

/// Parses a JSON request body into `T`, with a message that says what is wrong.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid("request body is empty; send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "request body is not valid JSON"
        } else {
            "request body does not fit the API"
        };
        ApiError::invalid(format!("{what}: {e}"))
    })
}
