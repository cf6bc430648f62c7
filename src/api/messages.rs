//! `POST /v1/messages`, Anthropic's Messages API, served to Anthropic SDK clients over any
//! provider kind: passed through to an Anthropic provider; for the others the request becomes a
//! chat request, and the answer (whole or as chunks) a Message or Anthropic's stream events. Errors on this endpoint are written in Anthropic's shape
//! ([`error_body`]), so the SDK raises the matching exception.

use super::chat::{exchange, Answered};
use super::chunks::{Answer, Encode};
use super::relay::{relay, Translate};
use super::{parse_body, routes, send, Ctx};
use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{random_id, ChatChunk, ChatRequest, ChatResponse, Message, Rest, ToolCall, Usage};
use crate::memory::Memory;
use crate::providers::Decoder;
use crate::router::Candidate;
use crate::wire::anthropic::{finish_reason_to_stop, turns as anthropic_turns, DEFAULT_MAX_TOKENS};
use http_types::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The Messages request fields memgate reads; the rest flows on to the provider.
#[derive(Debug, Deserialize)]
pub(super) struct MessagesRequest {
    model: String,
    messages: Vec<Turn>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(flatten)]
    rest: Rest,
}

#[derive(Debug, Deserialize)]
struct Turn {
    role: String,
    content: Value,
}

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    // Read in place rather than from a copy: a Messages body can be large, and an Anthropic
    // route sends the object itself on.
    let raw = Value::Object(parse_body::<Map<String, Value>>(body)?);
    let mut req = MessagesRequest::deserialize(&raw)
        .map_err(|e| ApiError::invalid(format!("request body does not fit the Messages API: {e}")))?;
    let Value::Object(raw) = raw else {
        return Err(ApiError::invalid("request body must be a JSON object"));
    };
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    if let Some((i, t)) = req
        .messages
        .iter()
        .enumerate()
        .find(|(_, t)| t.role != "user" && t.role != "assistant")
    {
        return Err(ApiError::invalid_param(
            &format!("messages.{i}.role"),
            format!(
                "role {:?} is not user or assistant; put system text in the top-level `system`",
                t.role
            ),
        ));
    }
    let (asked, candidates) = routes(ctx, &mut req.model, &mut req.rest)?;
    // All routes one kind: that kind's translation (Anthropic's is none at all). Mixed
    // fallbacks: the strictest, OpenAI's, which every kind accepts.
    let first = candidates[0].route.provider.kind;
    let kind = match candidates.iter().all(|c| c.route.provider.kind == first) {
        true => first,
        false => ProviderKind::Openai,
    };
    if kind == ProviderKind::Anthropic {
        return native(ctx, raw, req, asked, &candidates).await;
    }
    let chat = to_chat(req, kind)?;
    match exchange(ctx, chat, asked, &candidates, MessagesEncoder::default()).await? {
        Answered::Streaming(res) => Ok(res),
        Answered::Complete(answer) => Ok(json_response(200, &from_chat(&answer))),
    }
}

/// A Messages request to an Anthropic provider goes as the client wrote it (model renamed): server
/// tools, citations, documents and whatever Anthropic adds next survive. With memory on, the
/// conversation is assembled in the chat IR and written back as Anthropic turns.
async fn native(
    ctx: &mut Ctx,
    mut body: Map<String, Value>,
    req: MessagesRequest,
    asked: String,
    candidates: &[Candidate],
) -> Result<Response, ApiError> {
    // memgate acts on the fallback fields; Anthropic would refuse them.
    body.remove("models");
    body.remove("providerOptions");
    let stream = req.stream == Some(true);
    let turn = match &ctx.thread {
        Some(at) => {
            let chat = to_chat(req, ProviderKind::Anthropic)?;
            let (messages, turn) = Memory::begin(&ctx.app, &ctx.caller, at, chat.messages, &asked, &chat.rest).await?;
            let (system, turns) = anthropic_turns(&messages)?;
            body.insert("messages".to_owned(), Value::Array(turns));
            match system {
                Some(s) => body.insert("system".to_owned(), s),
                None => body.remove("system"),
            };
            Some(turn)
        }
        None => None,
    };
    let byok = ctx.caller.byok.clone();
    let (res, answered) = send(ctx, candidates, |c| {
        body.insert("model".to_owned(), Value::String(c.route.model.clone()));
        Ok(c.route.provider.messages_passthrough(&body, c.byok(byok.as_deref())))
    })
    .await?;
    if stream && res.is_event_stream() {
        let t = Native {
            decoder: Decoder::anthropic(),
            model: answered.name.clone(),
            answer: Answer::default(),
        };
        return Ok(relay(ctx, res, t, turn));
    }
    let bytes = res.bytes().await?;
    let mut message: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_gateway(format!("Anthropic sent an unreadable Messages body: {e}")))?;
    if let Some(m) = message.get_mut("model") {
        *m = Value::String(answered.name.clone());
    }
    // The same body read as chat: what memory keeps and the log counts.
    let chat = answered.route.provider.chat_response(&bytes)?;
    if let Some(log) = &mut ctx.log {
        log.usage.clone_from(&chat.usage);
    }
    if let Some(turn) = turn {
        turn.finish(chat.choices.first().map(|c| c.message.clone()), true)
            .await?;
    }
    Ok(json_response(200, &message))
}

/// Anthropic's events passed through as they come (`message_start` renamed to the client's
/// model), read on the side for memory and the log.
struct Native {
    decoder: Decoder,
    model: String,
    answer: Answer,
}

impl Translate for Native {
    fn event(&mut self, ev: sse::Event) -> Result<Vec<Vec<u8>>, ApiError> {
        for chunk in self.decoder.event(&ev)? {
            if let Some(c) = chunk.choices.first() {
                self.answer.add(&c.delta);
            }
        }
        let renamed = serde_json::from_str::<Value>(&ev.data)
            .ok()
            .filter(|v| v.get("type").and_then(Value::as_str) == Some("message_start"))
            .map(|mut v| {
                v["message"]["model"] = Value::String(self.model.clone());
                v.to_string()
            });
        Ok(vec![sse::frame(
            ev.event.as_deref(),
            renamed.as_deref().unwrap_or(&ev.data),
        )])
    }

    fn finished(&self) -> bool {
        self.decoder.finished()
    }

    fn usage(&self) -> Option<Usage> {
        self.decoder.usage()
    }

    fn answer(&self) -> Option<Message> {
        self.answer.message()
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        event("error", error_body(e))
    }
}

/// Request fields only Anthropic's API knows; other providers would refuse them.
const ANTHROPIC_ONLY: [&str; 5] = [
    "context_management",
    "container",
    "mcp_servers",
    "service_tier",
    "thinking",
];

/// A thinking budget as an OpenAI reasoning effort.
fn effort(budget_tokens: u64) -> &'static str {
    match budget_tokens {
        0..=2048 => "low",
        2049..=16384 => "medium",
        _ => "high",
    }
}

/// An error in Anthropic's shape: `{"type":"error","error":{"type","message"}}`.
pub fn error_body(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}})
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

/// The chat request a Messages request asks for, going to a provider of `kind`. Anthropic-only
/// fields and blocks reach only an Anthropic upstream; elsewhere `thinking` becomes
/// `reasoning_effort` and a failed tool result says so in its text.
pub(super) fn to_chat(req: MessagesRequest, kind: ProviderKind) -> Result<ChatRequest, ApiError> {
    let native = kind == ProviderKind::Anthropic;
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    match req.system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::new("system", Value::String(s))),
        Some(Value::Array(blocks)) => messages.push(Message::new("system", Value::Array(parts(&blocks)))),
        Some(_) => {
            return Err(ApiError::invalid_param(
                "system",
                "system must be a string or an array of text blocks",
            ))
        }
    }
    for turn in req.messages {
        match turn.role.as_str() {
            "assistant" => messages.push(assistant_turn(turn.content, native)),
            // `handle` admits only user and assistant turns.
            _ => user_turn(turn.content, native, &mut messages),
        }
    }
    let mut rest = Rest::new();
    // As max_completion_tokens: OpenAI's reasoning models refuse max_tokens, and the other
    // adapters read it first.
    rest.insert(
        "max_completion_tokens".to_owned(),
        Value::from(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    let mut parallel = None;
    for (k, v) in req.rest {
        match k.as_str() {
            "stop_sequences" => {
                rest.insert("stop".to_owned(), v);
            }
            "tools" => {
                rest.insert(k, tools(&v)?);
            }
            "tool_choice" => {
                parallel = v.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|d| !d);
                rest.insert(k, tool_choice(&v)?);
            }
            "metadata" => {
                if let Some(u) = v.get("user_id").filter(|u| u.is_string()) {
                    rest.insert("user".to_owned(), u.clone());
                }
            }
            "thinking" if !native => {
                if let Some(effort) = v.get("budget_tokens").and_then(Value::as_u64).map(effort) {
                    rest.insert("reasoning_effort".to_owned(), json!(effort));
                }
            }
            // Gemini has top_k; OpenAI's API does not.
            "top_k" if kind == ProviderKind::Openai => {}
            _ if !native && ANTHROPIC_ONLY.contains(&k.as_str()) => {}
            _ => {
                rest.insert(k, v);
            }
        }
    }
    if let Some(p) = parallel {
        rest.insert("parallel_tool_calls".to_owned(), Value::Bool(p));
    }
    if req.stream == Some(true) {
        // message_delta reports usage, so the chunks must bring it.
        rest.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: req.stream,
        rest,
    })
}

/// A user turn: its tool results become tool messages (first, as they answer the previous
/// turn), the rest one user message.
fn user_turn(content: Value, native: bool, out: &mut Vec<Message>) {
    let blocks = match content {
        Value::Array(b) => b,
        other => {
            out.push(Message::new("user", other));
            return;
        }
    };
    let (results, others): (Vec<Value>, Vec<Value>) = blocks
        .into_iter()
        .partition(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
    for r in results {
        let content = match r.get("content") {
            Some(Value::Array(b)) => Value::Array(parts(b)),
            Some(Value::String(s)) => Value::String(s.clone()),
            _ => Value::String(String::new()),
        };
        let failed = r.get("is_error").and_then(Value::as_bool) == Some(true);
        let content = match content {
            Value::String(s) if failed && !native => Value::String(format!("Error: {s}")),
            other => other,
        };
        let mut m = Message::new("tool", content);
        m.tool_call_id = r.get("tool_use_id").and_then(Value::as_str).map(str::to_owned);
        if failed && native {
            m.rest.insert("is_error".to_owned(), Value::Bool(true));
        }
        if let Some(cc) = r.get("cache_control") {
            m.rest.insert("cache_control".to_owned(), cc.clone());
        }
        out.push(m);
    }
    if !others.is_empty() {
        out.push(Message::new("user", Value::Array(parts(&others))));
    }
}

fn assistant_turn(content: Value, native: bool) -> Message {
    let blocks = match content {
        Value::Array(b) => b,
        other => return Message::new("assistant", other),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => {
                let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(ToolCall::function(s("id"), s("name"), input.to_string()));
            }
            Some("thinking" | "redacted_thinking") if native => thinking.push(b),
            _ => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut m = Message::new("assistant", content);
    m.tool_calls = (!calls.is_empty()).then_some(calls);
    if !thinking.is_empty() {
        m.rest.insert("thinking_blocks".to_owned(), Value::Array(thinking));
    }
    m
}

/// Content blocks as chat parts: text and images translated, `cache_control` kept, other
/// blocks (documents, search results…) passed as they are for an Anthropic upstream.
fn parts(blocks: &[Value]) -> Vec<Value> {
    blocks
        .iter()
        .map(|b| {
            let mut part = match b.get("type").and_then(Value::as_str) {
                Some("text") => json!({"type": "text", "text": b.get("text").cloned().unwrap_or_default()}),
                Some("image") => match image_url(b.get("source")) {
                    Some(url) => json!({"type": "image_url", "image_url": {"url": url}}),
                    None => return b.clone(),
                },
                _ => return b.clone(),
            };
            if let Some(cc) = b.get("cache_control") {
                part["cache_control"] = cc.clone();
            }
            part
        })
        .collect()
}

/// An image source as a URL: a data URL for inline data.
fn image_url(source: Option<&Value>) -> Option<String> {
    let s = source?;
    let field = |k: &str| s.get(k).and_then(Value::as_str);
    match field("type")? {
        "base64" => Some(format!("data:{};base64,{}", field("media_type")?, field("data")?)),
        "url" => field("url").map(str::to_owned),
        _ => None,
    }
}

fn tools(v: &Value) -> Result<Value, ApiError> {
    let list = ApiError::tools_list(v)?;
    let out = list
        .iter()
        .map(|t| match t.get("input_schema") {
            // A custom tool; server tools (web search, code execution…) have no schema and
            // pass as they are.
            Some(schema) => {
                let mut f = json!({"name": t.get("name").cloned().unwrap_or_default(), "parameters": schema});
                if let Some(d) = t.get("description") {
                    f["description"] = d.clone();
                }
                let mut tool = json!({"type": "function", "function": f});
                if let Some(cc) = t.get("cache_control") {
                    tool["cache_control"] = cc.clone();
                }
                tool
            }
            None => t.clone(),
        })
        .collect();
    Ok(Value::Array(out))
}

fn tool_choice(v: &Value) -> Result<Value, ApiError> {
    Ok(match v.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid_param("tool_choice.name", "tool_choice type \"tool\" needs a name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(ApiError::invalid_param(
                "tool_choice.type",
                "tool_choice.type must be auto, any, tool or none",
            ))
        }
    })
}

/// Chat usage back in Anthropic's terms: `input_tokens` excludes cached ones.
fn usage(u: Option<&Usage>) -> Value {
    let Some(u) = u else {
        return json!({"input_tokens": 0, "output_tokens": 0});
    };
    let n = |k: &str| u.rest.get(k).and_then(Value::as_u64);
    let read = n("cache_read_input_tokens").or_else(|| {
        u.rest
            .get("prompt_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64)
    });
    let written = n("cache_creation_input_tokens");
    let input = u
        .prompt_tokens
        .saturating_sub(read.unwrap_or(0).saturating_add(written.unwrap_or(0)));
    let mut out = json!({"input_tokens": input, "output_tokens": u.completion_tokens});
    if let Some(w) = written {
        out["cache_creation_input_tokens"] = Value::from(w);
    }
    if let Some(r) = read {
        out["cache_read_input_tokens"] = Value::from(r);
    }
    out
}

/// A message id in Anthropic's style, keeping the upstream's when it already is one.
fn message_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        _ => random_id("msg_"),
    }
}

pub(super) fn from_chat(answer: &ChatResponse) -> Value {
    let choice = answer.choices.first();
    let mut content: Vec<Value> = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(Value::Array(t)) = m.rest.get("thinking_blocks") {
            content.extend(t.iter().cloned());
        }
        let text = crate::ir::content_text(&m.content);
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for c in m.tool_calls.iter().flatten() {
            content.push(tool_use(c.id.as_str(), &c.function.name, &c.function.arguments));
        }
    }
    let stop = finish_reason_to_stop(choice.and_then(|c| c.finish_reason.as_deref()).unwrap_or("stop"));
    json!({
        "id": message_id(answer.rest.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(answer.usage.as_ref()),
    })
}

fn tool_use(id: &str, name: &str, arguments: &str) -> Value {
    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

/// Chat chunks as Anthropic stream events: message_start, one content block per text run,
/// thinking run or tool call, message_delta with the stop reason and usage, message_stop.
#[derive(Default)]
pub(super) struct MessagesEncoder {
    started: bool,
    /// The open block's index and kind; blocks are numbered from 0 in order.
    open: Option<(usize, Open)>,
    next: usize,
    stop: Option<&'static str>,
    usage: Option<Usage>,
}

#[derive(PartialEq)]
enum Open {
    Text,
    Thinking,
    /// A tool call, by its `tool_calls[].index` (a server may repeat the id on every fragment).
    Tool(Option<u64>),
    /// A block that arrives whole (redacted thinking).
    Whole,
}

fn event(kind: &str, data: Value) -> Vec<u8> {
    sse::frame(Some(kind), &data.to_string())
}

impl MessagesEncoder {
    /// Makes `kind` the open block (closing another), starting it with `start`.
    fn ensure(&mut self, kind: Open, start: Value, frames: &mut Vec<Vec<u8>>) -> usize {
        if let Some((i, k)) = &self.open {
            if *k == kind && kind != Open::Whole && kind != Open::Tool(None) {
                return *i;
            }
        }
        frames.extend(self.close());
        let i = self.next;
        self.next += 1;
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        self.open = Some((i, kind));
        i
    }

    fn close(&mut self) -> Option<Vec<u8>> {
        let (i, _) = self.open.take()?;
        Some(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ))
    }

    fn delta(i: usize, delta: Value) -> Vec<u8> {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": delta}),
        )
    }
}

impl Encode for MessagesEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, opening: Option<&Usage>) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        if !self.started {
            self.started = true;
            let id = message_id(chunk.rest.get("id").and_then(Value::as_str));
            frames.push(event(
                "message_start",
                json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                    "model": chunk.model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": usage(chunk.usage.as_ref().or(opening))}}),
            ));
            frames.push(event("ping", json!({"type": "ping"})));
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return frames;
        };
        let d = &choice.delta;
        if let Some(t) = d
            .get("reasoning_content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let i = self.ensure(Open::Thinking, json!({"type": "thinking", "thinking": ""}), &mut frames);
            frames.push(Self::delta(i, json!({"type": "thinking_delta", "thinking": t})));
        }
        for b in d.get("thinking_blocks").and_then(Value::as_array).into_iter().flatten() {
            match (b.get("signature").and_then(Value::as_str), &self.open) {
                (Some(sig), Some((i, Open::Thinking))) => {
                    frames.push(Self::delta(*i, json!({"type": "signature_delta", "signature": sig})));
                }
                // A redacted block arrives whole.
                _ => {
                    self.ensure(Open::Whole, b.clone(), &mut frames);
                    frames.extend(self.close());
                }
            }
        }
        if let Some(t) = d.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            let i = self.ensure(Open::Text, json!({"type": "text", "text": ""}), &mut frames);
            frames.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
        }
        for call in d.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let f = call.get("function");
            let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                let start =
                    json!({"type": "tool_use", "id": id, "name": s(f.and_then(|f| f.get("name"))), "input": {}});
                self.ensure(
                    Open::Tool(call.get("index").and_then(Value::as_u64)),
                    start,
                    &mut frames,
                );
            }
            let piece = s(f.and_then(|f| f.get("arguments")));
            if let (false, Some((i, Open::Tool(_)))) = (piece.is_empty(), &self.open) {
                frames.push(Self::delta(
                    *i,
                    json!({"type": "input_json_delta", "partial_json": piece}),
                ));
            }
        }
        if let Some(r) = choice.finish_reason.as_deref() {
            self.stop = Some(finish_reason_to_stop(r));
        }
        frames
    }

    fn finish(&mut self, usage_: Option<&Usage>) -> Vec<Vec<u8>> {
        let mut frames: Vec<Vec<u8>> = self.close().into_iter().collect();
        let u = usage(usage_.or(self.usage.as_ref()));
        frames.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": u}),
        ));
        frames.push(event("message_stop", json!({"type": "message_stop"})));
        frames
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        event("error", error_body(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    fn sample() -> Value {
        json!({"model": "m", "max_tokens": 100, "top_k": 3,
        "thinking": {"type": "enabled", "budget_tokens": 10000}, "context_management": {"edits": []},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "timeout", "is_error": true},
                {"type": "text", "text": "well?"}]}
        ]})
    }

    #[test]
    fn anthropic_only_fields_reach_only_anthropic() {
        let native = to_chat(request(sample()), ProviderKind::Anthropic).unwrap();
        assert_eq!(native.rest["thinking"]["budget_tokens"], 10000);
        assert!(native.rest.contains_key("context_management") && native.rest.contains_key("top_k"));
        assert!(native.messages[1].rest.contains_key("thinking_blocks"));
        assert_eq!(native.messages[2].rest["is_error"], true);
        assert_eq!(native.messages[2].content, "timeout");

        let openai = to_chat(request(sample()), ProviderKind::Openai).unwrap();
        assert_eq!(openai.rest["reasoning_effort"], "medium");
        assert_eq!(openai.rest["max_completion_tokens"], 100);
        for gone in ["thinking", "context_management", "top_k", "max_tokens"] {
            assert!(!openai.rest.contains_key(gone), "{gone} sent to OpenAI");
        }
        assert!(openai.messages[1].rest.is_empty());
        assert_eq!(openai.messages[2].content, "Error: timeout");
        assert!(openai.messages[2].rest.is_empty());
        // The tool result answers the call before the user's next words.
        assert_eq!(
            (openai.messages[2].role.as_str(), openai.messages[3].role.as_str()),
            ("tool", "user")
        );
        let gemini = to_chat(request(sample()), ProviderKind::Gemini).unwrap();
        assert_eq!(gemini.rest["top_k"], 3);
    }
}
