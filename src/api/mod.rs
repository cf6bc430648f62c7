//! The API surface: which path does what, who may call it, and one log line per request.
//!
//! Handlers return `Result<Response, ApiError>`; this module renders every error in OpenAI's
//! shape, because async-h1 sends nothing at all for a handler error.

mod chat;
mod chunks;
mod embeddings;
#[cfg(test)]
mod fuzz;
mod items;
mod memory;
mod messages;
mod models;
mod relay;
mod responses;
mod responses_chat;

use crate::app::App;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::http::{error_response, json_response, read_body, Peer};
use crate::ir::Usage;
use crate::memory::ThreadRef;
use crate::providers::Provider;
use crate::router::Route;
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

/// The one line logged per request. Never holds a key or a message body.
#[derive(Debug)]
pub(crate) struct AccessLog {
    method: Method,
    path: String,
    pub model: String,
    pub usage: Option<Usage>,
    /// How a streamed answer ended: complete, client-disconnected or interrupted.
    pub stream: Option<&'static str>,
    start: Instant,
}

impl AccessLog {
    pub fn finish(self, status: u16) {
        let (p, c) = self.usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        log::info!(
            target: "memgate::access",
            "{} {} model={} status={} ms={:.1} tokens={}+{}{}",
            self.method,
            self.path,
            if self.model.is_empty() { "-" } else { &self.model },
            status,
            self.start.elapsed().as_secs_f64() * 1000.0,
            p,
            c,
            self.stream.map_or(String::new(), |s| format!(" stream={s}")),
        );
    }
}

/// Serves one request; never fails (errors become OpenAI-shaped bodies).
pub async fn handle(app: Arc<App>, mut req: Request, peer: Peer) -> Response {
    // Health checks come every few seconds from a supervisor: not worth a log line each.
    let mut log = (req.url().path() != "/healthz").then(|| AccessLog {
        method: req.method(),
        path: req.url().path().to_owned(),
        model: String::new(),
        usage: None,
        stream: None,
        start: Instant::now(),
    });
    let (res, status) = match dispatch(&app, &mut req, peer, &mut log).await {
        Ok(res) => {
            let status = res.status().into();
            (res, status)
        }
        Err(e) => (render_error(req.url().path(), &e), e.status),
    };
    // A streaming handler took the log and finishes it when the stream ends.
    if let Some(log) = log {
        log.finish(status);
    }
    res
}

async fn dispatch(
    app: &Arc<App>,
    req: &mut Request,
    peer: Peer,
    log: &mut Option<AccessLog>,
) -> Result<Response, ApiError> {
    let method = req.method();
    let path = req.url().path().to_owned();
    if path == "/healthz" {
        return Ok(json_response(200, &serde_json::json!({"status": "ok"})));
    }
    let route = Endpoint::find(&path)
        .ok_or_else(|| ApiError::not_found(format!("no route for {path}; the API lives under /v1")))?;
    if route.method().is_some_and(|m| m != method) {
        return Err(ApiError::method_not_allowed(method.as_ref(), &path));
    }
    let caller = auth::authenticate(app.auth, &app.store, req)?;
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
    let body = match route {
        Endpoint::Models => return Ok(models::list(ctx)),
        Endpoint::Model(id) => return models::get(ctx, &id),
        Endpoint::Chat | Endpoint::Responses | Endpoint::Messages | Endpoint::Embeddings | Endpoint::Memory(_) => {
            match read_body(req, ctx.app.max_body, ctx.app.body_timeout).await {
                Ok(body) => body,
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
        let query = req
            .url()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        return memory::handle(ctx, req.method(), rest, &query, &body).await;
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

/// Refuses a body declared as anything but JSON (415).
///
/// Browsers send `text/plain` and form bodies cross-origin without a CORS preflight, so taking
/// them would let any web page drive a gateway on loopback (spend tokens, write into memory).
/// A body with no Content-Type is still read as JSON: hand-written clients omit it. async-h1
/// reports a missing one as `application/octet-stream`, which browsers never send without a
/// preflight, so that passes too.
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
        json_response(e.status, &messages::error_body(e))
    } else {
        error_response(e)
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
            _ if path.starts_with("/v1/memory/") => Endpoint::Memory(path["/v1/memory/".len()..].to_owned()),
            _ => Endpoint::Model(path.strip_prefix("/v1/models/").filter(|m| !m.is_empty())?.to_owned()),
        })
    }

    fn method(&self) -> Option<Method> {
        match self {
            Endpoint::Models | Endpoint::Model(_) => Some(Method::Get),
            Endpoint::Memory(_) => None,
            _ => Some(Method::Post),
        }
    }
}

/// Routes the request's model: logs the name the client asked for, rewrites `model` to the
/// upstream's name, and returns the asked name (answers carry it back) with the route.
pub(crate) fn route(ctx: &mut Ctx, model: &mut String) -> Result<(String, Route), ApiError> {
    let asked = std::mem::take(model);
    if let Some(log) = &mut ctx.log {
        log.model.clone_from(&asked);
    }
    let route = ctx.app.router.resolve(&asked)?;
    model.clone_from(&route.model);
    Ok((asked, route))
}

/// Sends an upstream request; an upstream error status becomes the client's error.
pub(crate) async fn send(ctx: &Ctx, provider: &Provider, req: &UpstreamRequest) -> Result<UpstreamResponse, ApiError> {
    provider.send(&ctx.app.client, req).await
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
