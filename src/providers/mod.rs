//! Provider adapters: the IR in, a provider's wire format out, and back.
//!
//! Each provider kind has its own module and keeps its quirks there: how a request is framed and
//! authenticated, how its answers, stream events and errors read. [`Provider`] is the one
//! interface the API layer calls; it dispatches on the kind.

mod anthropic;
mod gemini;
mod listing;
mod openai;
pub mod replay;
mod window;

pub use listing::Model;

use crate::config::{Models, ProviderConfig, ProviderKind, ResponsesMode};
use crate::error::ApiError;
use crate::http::sse;
use crate::ir::{ChatChunk, ChatRequest, ChatResponse, PassthroughRequest};
use crate::upstream::retry::Budget;
use crate::upstream::slots::Slots;
use crate::upstream::{Client, UpstreamRequest, UpstreamResponse};
use crate::wire::common::json;
use crate::wire::openai::StreamUsage;
use crate::wire::{anthropic as anthropic_wire, gemini as gemini_wire, openai as openai_wire};
use futures_lite::future;
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A configured upstream, ready to build requests. Its Debug hides the key.
pub struct Provider {
    /// The table name in `[providers.NAME]`, which is also the model prefix.
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    api_key: Option<String>,
    /// Model names the config lists.
    pub models: Vec<String>,
    /// Whether `/v1/models` asks the upstream instead (`models = "auto"`, or none listed).
    discover: bool,
    listing: listing::Cache,
    aliases: std::collections::BTreeMap<String, String>,
    /// The fixtures a `replay` provider answers from.
    replay: Option<replay::Fixtures>,
    responses: ResponsesMode,
    /// Set when the upstream answered `/responses` with a 404 for the endpoint (`responses =
    /// "auto"`): Responses go through chat for the rest of the process (a reload starts over).
    lacks_responses: AtomicBool,
    /// Whether streams ask for a usage chunk (`stream_usage`, default true)…
    stream_usage: bool,
    /// …unless the upstream refused `stream_options` with a 400/422 (Mistral, older Azure
    /// api-versions): then asked no more for the rest of the process.
    refuses_stream_options: AtomicBool,
    /// Context windows: configured, and discovered per model (see `window`).
    windows: window::Windows,
    /// What the upstream runs at once (`slots`), when configured: memory gives way there.
    slots: Option<Arc<Slots>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &crate::config::Redacted(self.api_key.as_deref()))
            .field("models", &self.models)
            .field("discover", &self.discover)
            .field("aliases", &self.aliases)
            .field("responses", &self.responses)
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub fn new(name: &str, cfg: &ProviderConfig) -> Result<Provider, String> {
        let replay = match (cfg.kind, &cfg.dir) {
            (ProviderKind::Replay, Some(dir)) => {
                Some(replay::Fixtures::load(dir).map_err(|e| format!("[providers.{name}] {e}"))?)
            }
            _ => None,
        };
        Ok(Provider {
            name: name.to_owned(),
            kind: cfg.kind,
            // A replay provider answers in process; its URL only carries the API paths.
            base_url: match cfg.kind {
                ProviderKind::Replay => "http://replay.invalid/v1".to_owned(),
                _ => cfg.base_url().unwrap_or_default(),
            },
            api_key: cfg.api_key(),
            models: cfg.models.listed().to_vec(),
            discover: match cfg.models {
                Models::Auto => true,
                Models::Unset => cfg.kind == ProviderKind::Openai,
                Models::Listed(_) => false,
            },
            listing: listing::Cache::default(),
            aliases: cfg.aliases.clone(),
            windows: window::Windows::new(cfg),
            replay,
            responses: cfg.responses.unwrap_or_default(),
            lacks_responses: AtomicBool::new(false),
            stream_usage: cfg.stream_usage.unwrap_or(true),
            refuses_stream_options: AtomicBool::new(false),
            slots: cfg.slots.map(Slots::new),
        })
    }

    /// Whether the upstream's slots are counted (`slots`), so that memory gives way there.
    pub fn has_slots(&self) -> bool {
        self.slots.is_some()
    }

    /// Returns once memory may call this upstream: at once without `slots`, else when a slot is
    /// free and clients have left it alone for `quiet` (see [`Slots::until_free`]).
    pub async fn until_free(&self, quiet: std::time::Duration) {
        if let Some(slots) = &self.slots {
            slots.until_free(quiet).await;
        }
    }

    /// The upstream's name for a model the client named `model` (an alias, or the same).
    pub fn upstream_model(&self, model: &str) -> String {
        self.aliases.get(model).cloned().unwrap_or_else(|| model.to_owned())
    }

    /// The credential sent upstream: the caller's own (BYOK) if given, else the configured one.
    fn credential<'a>(&'a self, byok: Option<&'a str>) -> Option<&'a str> {
        byok.or(self.api_key.as_deref())
    }

    /// Whether the Responses API is passed through to the provider (else memgate translates it
    /// to chat): an OpenAI-compatible one, unless set to `chat` or found to lack it.
    pub fn speaks_responses(&self) -> bool {
        matches!(self.kind, ProviderKind::Openai | ProviderKind::Replay)
            && match self.responses {
                ResponsesMode::Chat => false,
                ResponsesMode::Passthrough => true,
                ResponsesMode::Auto => !self.lacks_responses.load(Ordering::Relaxed),
            }
    }

    /// Learns from the error a passed-through `/responses` request got whether the upstream
    /// lacks the endpoint (`responses = "auto"`). True when Responses now go through chat.
    /// The switch is for every caller of the provider, so only a 404 that can only mean a
    /// missing route counts: never from OpenAI itself, never for a request that named stored
    /// state (`stored`: a caller's stale `previous_response_id` or `conversation` is a 404 too),
    /// and only a body that is no OpenAI error object (FastAPI's `{"detail":"Not Found"}`,
    /// Ollama's "404 page not found", HTML, nothing) or one whose message says the route is
    /// missing (llama.cpp's "File Not Found"); never one about a model or another resource.
    pub fn learns_no_responses(&self, e: &ApiError, stored: bool) -> bool {
        let probing = self.responses == ResponsesMode::Auto
            && matches!(self.kind, ProviderKind::Openai | ProviderKind::Replay)
            && !self.base_url.starts_with("https://api.openai.com/");
        if !(probing && e.status == 404 && !stored && names_missing_route(e)) {
            return false;
        }
        // Requests in flight together may all learn it; one log line says so.
        if self.lacks_responses.swap(true, Ordering::Relaxed) {
            return true;
        }
        log::info!(
            "provider '{}' has no /responses endpoint ({}): Responses requests are translated through chat from now on \
             (set responses = \"chat\" to skip the probe, \"passthrough\" to never translate)",
            self.name,
            e.message
        );
        true
    }

    /// A chat-completions request for this provider; `req.model` is already the upstream name.
    pub fn chat_request(&self, req: &ChatRequest, byok: Option<&str>) -> Result<UpstreamRequest, ApiError> {
        let key = self.credential(byok);
        match self.kind {
            ProviderKind::Openai | ProviderKind::Replay => {
                let usage = match self.refuses_stream_options.load(Ordering::Relaxed) {
                    true => StreamUsage::Refused,
                    false if self.stream_usage => StreamUsage::Ask,
                    false => StreamUsage::AsSent,
                };
                Ok(openai::chat_request(&self.base_url, key, req, usage))
            }
            ProviderKind::Anthropic => anthropic::chat_request(&self.base_url, key, req),
            ProviderKind::Gemini => gemini::chat_request(&self.base_url, key, req),
        }
    }

    /// A complete chat answer from the provider's body.
    pub fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        match self.kind {
            ProviderKind::Openai | ProviderKind::Replay => openai_wire::parse(body),
            ProviderKind::Anthropic => anthropic_wire::chat_response(body),
            ProviderKind::Gemini => gemini_wire::chat_response(body),
        }
    }

    /// A decoder for this provider's stream answering `req`.
    pub fn chat_decoder(&self, req: &ChatRequest) -> Decoder {
        let include_usage = req
            .rest
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match self.kind {
            ProviderKind::Openai | ProviderKind::Replay => Decoder::Openai(openai_wire::Decoder::new(include_usage)),
            ProviderKind::Anthropic => Decoder::Anthropic(anthropic_wire::Decoder::new(include_usage)),
            ProviderKind::Gemini => Decoder::Gemini(gemini_wire::Decoder::new(include_usage)),
        }
    }

    /// An embeddings request (OpenAI's shape in, the provider's out).
    pub fn embeddings_request(
        &self,
        req: &PassthroughRequest,
        byok: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        let key = self.credential(byok);
        match self.kind {
            ProviderKind::Openai | ProviderKind::Replay => Ok(openai::post(&self.base_url, "/embeddings", key, req)),
            ProviderKind::Gemini => gemini::embeddings_request(&self.base_url, key, req),
            ProviderKind::Anthropic => Err(ApiError::invalid_param(
                "model",
                format!(
                    "provider '{}' is Anthropic, which offers no embeddings API; route embeddings to an OpenAI-compatible \
                     or Gemini provider",
                    self.name
                ),
            )),
        }
    }

    /// An embeddings answer in OpenAI's shape (`data[].embedding` as floats).
    pub fn embeddings_response(&self, body: &[u8], model: &str) -> Result<Value, ApiError> {
        match self.kind {
            ProviderKind::Gemini => gemini_wire::embeddings_response(body, model),
            _ => openai_wire::parse(body),
        }
    }

    /// A request forwarded in the OpenAI format itself (`/responses` on a provider that
    /// [`speaks_responses`](Self::speaks_responses)).
    pub fn passthrough(&self, path: &str, body: &impl Serialize, byok: Option<&str>) -> UpstreamRequest {
        openai::post(&self.base_url, path, self.credential(byok), body)
    }

    /// A Messages API request sent to an Anthropic provider as the client wrote it
    /// (`body.model` already the upstream name): nothing is lost in translation.
    pub fn messages_passthrough(&self, body: &serde_json::Map<String, Value>, byok: Option<&str>) -> UpstreamRequest {
        anthropic::post(&self.base_url, self.credential(byok), body)
    }

    /// Sends a request this provider built, retrying within `budget` ([`crate::upstream::retry`] says when). An
    /// error status becomes an [`ApiError`] read from the provider's own error format.
    pub async fn send(
        &self,
        client: &Client,
        req: &UpstreamRequest,
        budget: &mut Budget,
    ) -> Result<UpstreamResponse, ApiError> {
        // The request resent without the `stream_options` the upstream refused.
        let mut healed = None;
        loop {
            let req = healed.as_ref().unwrap_or(req);
            budget.start();
            // Generations hold a server's slots; a GET (a model list) takes none.
            let generates = req.method == http_types::Method::Post;
            let slot = self.slots.as_ref().filter(|_| generates).map(|s| match req.gives_way {
                Some(grace) => s.memory(grace),
                None => s.client(&self.name),
            });
            let sending = async {
                match &self.replay {
                    Some(fixtures) => fixtures.answer(req),
                    None => client.send(req).await,
                }
            };
            let outcome = match &slot {
                Some(slot) => {
                    let given_way = async {
                        slot.given_way().await;
                        Err(crate::upstream::gave_way(&self.name))
                    };
                    future::or(sending, given_way).await
                }
                None => sending.await,
            };
            let (wait, err) = match outcome {
                Ok(res) if res.is_success() => return Ok(res.holding(slot)),
                Ok(res) => {
                    let (status, after) = (res.status, res.retry_after);
                    let body = res.bytes().await?;
                    let err = self.error(status, &body);
                    if healed.is_none() {
                        if let Some(resent) = self.without_stream_options(req, status, &body) {
                            healed = Some(resent);
                            continue;
                        }
                    }
                    if !budget.retries(status, &body) {
                        return Err(err);
                    }
                    (budget.next_wait(after), err)
                }
                // The connection failed before an answer began: nothing was processed.
                Err(e) if e.code.as_deref() == Some("bad_gateway") => (budget.next_wait(None), e),
                Err(e) => return Err(e),
            };
            // Not in flight while it waits to try again.
            drop(slot);
            let Some(wait) = wait else { return Err(err) };
            log::info!(
                "provider '{}': {} ({}); attempt {} in {} ms",
                self.name,
                err.status,
                err.message,
                budget.made() + 1,
                wait.as_millis()
            );
            smol::Timer::after(wait).await;
        }
    }

    /// `req` again without `stream_options` when the upstream refused it (a 400/422 whose body
    /// names it, as Mistral's `extra_forbidden`, Azure's "Unrecognized request argument") and it
    /// asked only for usage, which memgate then estimates as for servers that send none; the
    /// provider is asked no more. A client's other stream options are never dropped.
    fn without_stream_options(&self, req: &UpstreamRequest, status: u16, body: &[u8]) -> Option<UpstreamRequest> {
        let openai = matches!(self.kind, ProviderKind::Openai | ProviderKind::Replay);
        if !(openai && matches!(status, 400 | 422) && contains(body, b"stream_options")) {
            return None;
        }
        let mut sent: serde_json::Map<String, Value> = serde_json::from_slice(&req.body).ok()?;
        let options = sent.get("stream_options")?.as_object()?;
        if options.keys().any(|k| k != "include_usage") {
            return None;
        }
        sent.shift_remove("stream_options");
        if !self.refuses_stream_options.swap(true, Ordering::Relaxed) {
            log::info!(
                "provider '{}' refuses stream_options ({status}): streams are sent without it from now on and their \
                 usage is estimated when the upstream reports none (set stream_usage = false to skip the probe)",
                self.name
            );
        }
        let mut resent = req.clone();
        resent.body = serde_json::to_vec(&sent).ok()?;
        Some(resent)
    }

    /// A complete (non-streamed) chat exchange.
    pub async fn chat(
        &self,
        client: &Client,
        req: &ChatRequest,
        byok: Option<&str>,
        budget: &mut Budget,
    ) -> Result<ChatResponse, ApiError> {
        let upstream = self.chat_request(req, byok)?;
        let body = self.send(client, &upstream, budget).await?.bytes().await?;
        self.chat_response(&body)
    }

    /// The provider's error body as the OpenAI error the SDKs expect for it.
    pub fn error(&self, status: u16, body: &[u8]) -> ApiError {
        if status == 400 {
            self.learn_window(body);
        }
        match self.kind {
            ProviderKind::Openai | ProviderKind::Replay => ApiError::from_upstream(status, body),
            ProviderKind::Anthropic => anthropic_wire::error(status, body),
            ProviderKind::Gemini => gemini_wire::error(status, body),
        }
    }
}

/// Reads one provider's stream events into chat chunks.
#[derive(Debug)]
pub enum Decoder {
    Openai(openai_wire::Decoder),
    Anthropic(anthropic_wire::Decoder),
    Gemini(gemini_wire::Decoder),
}

impl Decoder {
    /// The chunks one event carries; `Err` when the provider reported an error mid-stream.
    pub fn event(&mut self, ev: &sse::Event) -> Result<Vec<ChatChunk>, ApiError> {
        match self {
            Decoder::Openai(d) => d.event(&ev.data),
            Decoder::Anthropic(d) => d.event(ev.event.as_deref(), &ev.data),
            Decoder::Gemini(d) => d.event(&ev.data),
        }
    }

    /// Usage the provider reported, for a client that did not ask for a usage chunk.
    pub fn usage(&self) -> Option<crate::ir::Usage> {
        match self {
            Decoder::Openai(d) => d.usage.clone(),
            Decoder::Anthropic(d) => d.usage(),
            Decoder::Gemini(d) => d.usage(),
        }
    }

    /// Whether the client's chunks carry usage (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        match self {
            Decoder::Openai(d) => d.include_usage,
            Decoder::Anthropic(d) => d.stream.include_usage,
            Decoder::Gemini(d) => d.stream.include_usage,
        }
    }

    /// Whether the provider signalled the clean end of the answer.
    pub fn finished(&self) -> bool {
        match self {
            Decoder::Openai(d) => d.finished,
            Decoder::Anthropic(d) => d.finished(),
            Decoder::Gemini(d) => d.finished(),
        }
    }
}

/// A request upstream: the provider's own `headers` first, then the `accept` every provider is
/// sent (JSON answers and event streams alike), then its credential header.
fn request(
    method: http_types::Method,
    url: String,
    mut headers: Vec<(&'static str, String)>,
    credential: Option<(&'static str, String)>,
    body: Vec<u8>,
) -> UpstreamRequest {
    headers.push(("accept", "application/json, text/event-stream".to_owned()));
    headers.extend(credential);
    UpstreamRequest {
        method,
        url,
        headers,
        body,
        gives_way: None,
    }
}

/// Whether a 404 is about the route itself, not a resource named in the request (see
/// [`Provider::learns_no_responses`]).
fn names_missing_route(e: &ApiError) -> bool {
    let message = e.message.to_ascii_lowercase();
    if message.contains("model") {
        return false;
    }
    if message.starts_with(crate::error::UNSHAPED) {
        return true;
    }
    ["file not found", "page not found", "route", "path", "endpoint", "url"]
        .iter()
        .any(|w| message.contains(w))
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(base_url: &str) -> Provider {
        let toml = format!("[providers.p]\nkind = \"openai\"\nbase_url = \"{base_url}\"\n");
        let config = crate::config::Config::parse(&toml).unwrap();
        Provider::new("p", &config.providers["p"]).unwrap()
    }

    /// Whether a fresh provider at `base_url` learns "no /responses" from this 404.
    fn learns(base_url: &str, body: &str, stored: bool) -> bool {
        let p = provider(base_url);
        let learnt = p.learns_no_responses(&ApiError::from_upstream(404, body.as_bytes()), stored);
        assert_eq!(p.speaks_responses(), !learnt);
        learnt
    }

    #[test]
    fn only_a_404_for_the_endpoint_itself_switches_responses_to_chat() {
        let local = "http://127.0.0.1:8000/v1";
        // A stale previous_response_id of one caller (OpenAI's own words) says nothing of the
        // endpoint: neither at OpenAI, nor at a compatible proxy, nor with the field unseen.
        let stale = r#"{"error":{"message":"Previous response with id 'resp_abc' not found.","type":"invalid_request_error","param":"previous_response_id","code":"previous_response_not_found"}}"#;
        for (url, stored) in [("https://api.openai.com/v1", true), (local, true), (local, false)] {
            assert!(!learns(url, stale, stored), "{url} {stored}");
        }
        let conversation = r#"{"error":{"message":"Conversation with id 'conv_1' not found.","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(!learns(local, conversation, false));
        // A missing model's 404 (vLLM's words).
        let model = r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
        assert!(!learns(local, model, false));
        // Servers without the endpoint: FastAPI (llama-cpp-python, fixtures/local/prov-020),
        // llama.cpp, Ollama, an HTML page, nothing.
        for missing in [
            r#"{"detail":"Not Found"}"#,
            r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
            "404 page not found",
            "<html><body><h1>404 Not Found</h1></body></html>",
            "",
        ] {
            assert!(learns(local, missing, false), "{missing}");
            // Never with a caller's stored state in the request, never at OpenAI itself.
            assert!(!learns(local, missing, true), "{missing}");
            assert!(!learns("https://api.openai.com/v1", missing, false), "{missing}");
        }
    }
}
