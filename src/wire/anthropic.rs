//! Anthropic's Messages API format, both ways: chat requests out to Anthropic and its answers
//! back (below), and a client's Messages request in and its answer out (`to_chat`, `from_chat`).
//!
//! Chat requests become Messages requests: system and developer turns move to `system`, tool
//! results become `tool_result` blocks in a user turn, consecutive turns of one role merge (the
//! API wants them alternating), and `max_tokens`, which Anthropic requires, gets a default.
//! Fields that only mean something to OpenAI or another gateway are mapped or dropped
//! ([`common::FOREIGN`]: Anthropic rejects unknown fields); anything else passes through, so a client can send `thinking`, `top_k` or
//! `cache_control` as Anthropic defines them.
//!
//! Answers come back as chat completions. Thinking blocks ride in the message as
//! `thinking_blocks` (whole, with their signatures, so a client can send them back) and as
//! `reasoning_content` text; cache token counts appear in `usage`.

use super::common::{self, created, parse_json, Tool, ToolChoice, Translated};
use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::ir::{random_id, ChatChunk, ChatRequest, ChatResponse, Message, Rest, ToolCall, Usage};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// `max_tokens` when the client gives none: Anthropic requires one, and every current model
/// can produce this many.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Messages request body for a chat request.
pub(crate) fn messages_body(req: &ChatRequest) -> Result<Map<String, Value>, ApiError> {
    let mut body = Map::new();
    body.insert("model".to_owned(), Value::String(req.model.clone()));
    let (system, messages) = turns(&req.messages)?;
    let n = |k: &str| req.rest.get(k).and_then(Value::as_u64);
    let max = n("max_completion_tokens")
        .or_else(|| n("max_tokens"))
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".to_owned(), Value::from(max));
    if let Some(system) = system {
        body.insert("system".to_owned(), system);
    }
    body.insert("messages".to_owned(), Value::Array(messages));
    if let Some(stop) = common::stop_sequences(&req.rest) {
        body.insert("stop_sequences".to_owned(), stop);
    }
    if let Some(user) = req.rest.get("user").and_then(Value::as_str) {
        body.insert("metadata".to_owned(), json!({"user_id": user}));
    }
    let parallel = req.rest.get("parallel_tool_calls").and_then(Value::as_bool);
    for (k, v) in &req.rest {
        match k.as_str() {
            "tools" => {
                body.insert("tools".to_owned(), tools(v)?);
            }
            "tool_choice" => {
                body.insert("tool_choice".to_owned(), tool_choice(v, parallel)?);
            }
            // OpenAI's range is 0-2, Anthropic's 0-1.
            "temperature" if v.as_f64().is_some_and(|t| t > 1.0) => {
                body.insert(k.clone(), json!(1.0));
            }
            _ if v.is_null() || common::FOREIGN.contains(&k.as_str()) => {}
            _ => {
                body.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if parallel == Some(false) && !body.contains_key("tool_choice") && body.contains_key("tools") {
        body.insert(
            "tool_choice".to_owned(),
            json!({"type": "auto", "disable_parallel_tool_use": true}),
        );
    }
    if req.is_stream() {
        body.insert("stream".to_owned(), Value::Bool(true));
    }
    Ok(body)
}

/// Splits chat messages into Anthropic's `system` and its alternating turns.
pub(crate) fn turns(messages: &[Message]) -> Result<(Option<Value>, Vec<Value>), ApiError> {
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(blocks(&m.content, m.rest.get("cache_control")));
                continue;
            }
            "user" => ("user", blocks(&m.content, m.rest.get("cache_control"))),
            "assistant" => ("assistant", assistant_blocks(m)),
            "tool" => ("user", vec![tool_result(m)]),
            other => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("role {other:?} is not one of system, developer, user, assistant, tool"),
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            // A tool result and the user's next words go in one user turn, as the API wants.
            Some((last, b)) if last == role => b.extend(blocks),
            _ => out.push((role.to_owned(), blocks)),
        }
    }
    let system = match system.as_slice() {
        [] => None,
        // Plain text stays a string; blocks are kept when any carries cache_control.
        parts if parts.iter().all(|b| b.get("cache_control").is_none()) => Some(Value::String(
            parts
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n\n"),
        )),
        _ => Some(Value::Array(system)),
    };
    let turns = out
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

/// Chat content (a string or parts) as content blocks; a message-level `cache_control` marks the
/// last block, as Anthropic places breakpoints on blocks.
fn blocks(content: &Value, cache_control: Option<&Value>) -> Vec<Value> {
    let mut out: Vec<Value> = match content {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts.iter().filter_map(block).collect(),
        _ => Vec::new(),
    };
    if let (Some(cc), Some(last)) = (cache_control, out.last_mut()) {
        last["cache_control"] = cc.clone();
    }
    out
}

/// One chat content part as a block. Parts already in Anthropic's shape pass through.
fn block(part: &Value) -> Option<Value> {
    let mut b = match part.get("type").and_then(Value::as_str)? {
        "text" => {
            let text = part.get("text").and_then(Value::as_str)?;
            if text.is_empty() {
                return None;
            }
            json!({"type": "text", "text": text})
        }
        "image_url" => {
            let url = part
                .get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)?;
            json!({"type": "image", "source": source(url)})
        }
        "file" => {
            let data = part
                .get("file")
                .and_then(|f| f.get("file_data"))
                .and_then(Value::as_str)?;
            json!({"type": "document", "source": source(data)})
        }
        _ => return Some(part.clone()),
    };
    if let Some(cc) = part.get("cache_control") {
        b["cache_control"] = cc.clone();
    }
    Some(b)
}

/// An image or document source: inline for a data URL, by reference otherwise.
fn source(url: &str) -> Value {
    match common::data_url(url) {
        Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
        None => json!({"type": "url", "url": url}),
    }
}

fn assistant_blocks(m: &Message) -> Vec<Value> {
    let mut out: Vec<Value> = m
        .rest
        .get("thinking_blocks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.extend(blocks(&m.content, m.rest.get("cache_control")));
    for call in m.tool_calls.iter().flatten() {
        // Arguments the model produced as broken JSON still go back, wrapped, rather than lost.
        let input: Value = serde_json::from_str(&call.function.arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| {
                if call.function.arguments.trim().is_empty() {
                    json!({})
                } else {
                    json!({"arguments": call.function.arguments})
                }
            });
        out.push(json!({"type": "tool_use", "id": tool_id(&call.id), "name": call.function.name, "input": input}));
    }
    out
}

/// A tool-call id as Anthropic accepts it (`^[a-zA-Z0-9_-]+$`): another provider's id in a
/// shared history (`functions.get_weather:0`, a Gemini id carrying its signature) has every
/// other character replaced, the same way in the call and in its result, so they still match.
fn tool_id(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

fn tool_result(m: &Message) -> Value {
    let content = match &m.content {
        Value::String(s) => Value::String(s.clone()),
        Value::Array(_) => Value::Array(blocks(&m.content, None)),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    };
    let mut b = json!({
        "type": "tool_result",
        "tool_use_id": tool_id(m.tool_call_id.as_deref().unwrap_or_default()),
        "content": content,
    });
    if m.rest.get("is_error") == Some(&Value::Bool(true)) {
        b["is_error"] = Value::Bool(true);
    }
    if let Some(cc) = m.rest.get("cache_control") {
        b["cache_control"] = cc.clone();
    }
    b
}

fn tools(v: &Value) -> Result<Value, ApiError> {
    let tools = common::tools(v)?
        .into_iter()
        .map(|t| match t {
            // Tools already in Anthropic's shape (server tools, `input_schema`) pass through.
            Tool::Native(t) => t.clone(),
            Tool::Function { name, function, tool } => {
                let mut out = json!({
                    "name": name,
                    "input_schema": function.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = function.get("description") {
                    out["description"] = d.clone();
                }
                if let Some(cc) = tool.get("cache_control") {
                    out["cache_control"] = cc.clone();
                }
                out
            }
        })
        .collect();
    Ok(Value::Array(tools))
}

fn tool_choice(v: &Value, parallel: Option<bool>) -> Result<Value, ApiError> {
    let mut choice = match common::tool_choice(v)? {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Named(Some(name)) => json!({"type": "tool", "name": name}),
        // An object in Anthropic's own shape.
        ToolChoice::Named(None) => v.clone(),
    };
    if parallel == Some(false) && choice["type"] != "none" {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Ok(choice)
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
fn stop_reason_to_finish(reason: &str) -> &'static str {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// OpenAI's `finish_reason` as Anthropic's `stop_reason`.
pub(crate) fn finish_reason_to_stop(reason: &str) -> &'static str {
    match reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic usage (input excludes cached tokens) in OpenAI's terms (prompt includes them).
fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (written, read) = (n("cache_creation_input_tokens"), n("cache_read_input_tokens"));
    // Saturating: counts come from the network.
    let prompt = n("input_tokens")
        .unwrap_or(0)
        .saturating_add(written.unwrap_or(0))
        .saturating_add(read.unwrap_or(0));
    let mut usage = Usage::counted(prompt, n("output_tokens").unwrap_or(0), read, None);
    for (k, v) in [
        ("cache_creation_input_tokens", written),
        ("cache_read_input_tokens", read),
    ] {
        if let Some(v) = v {
            usage.rest.insert(k.to_owned(), Value::from(v));
        }
    }
    usage
}

pub(crate) fn chat_response(body: &[u8]) -> Result<ChatResponse, ApiError> {
    let v: Value = parse_json(body)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(tool_call(b)),
            Some("thinking" | "redacted_thinking") => thinking.push(b.clone()),
            _ => {}
        }
    }
    let mut message = Message::assistant(text, calls);
    add_thinking(&mut message.rest, thinking);
    let str_of = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let finish = stop_reason_to_finish(str_of("stop_reason"));
    Ok(ChatResponse {
        usage: v.get("usage").map(usage),
        ..ChatResponse::translated(str_of("id"), created(), str_of("model"), message, finish)
    })
}

fn tool_call(b: &Value) -> ToolCall {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
    ToolCall::function(s("id"), s("name"), input.to_string())
}

/// Thinking blocks as `thinking_blocks` (whole) and `reasoning_content` (their text).
fn add_thinking(rest: &mut Rest, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    let text: String = blocks
        .iter()
        .filter_map(|b| b.get("thinking").and_then(Value::as_str))
        .collect();
    if !text.is_empty() {
        rest.insert("reasoning_content".to_owned(), Value::String(text));
    }
    rest.insert("thinking_blocks".to_owned(), Value::Array(blocks));
}

/// A vendor error as the OpenAI error of the same meaning; 529 (overloaded) becomes 503, the
/// status OpenAI clients treat as "try again later".
pub(crate) fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(e) = v.get("error").filter(|e| e.is_object()) else {
        return ApiError::from_upstream(if status == 529 { 503 } else { status }, body);
    };
    error_object(status, e)
}

fn error_object(status: u16, e: &Value) -> ApiError {
    let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
    let class = match (kind, status) {
        ("overloaded_error", _) | (_, 529) => Some((503, "server_error", Some("overloaded"))),
        ("rate_limit_error", _) => Some((429, "rate_limit_error", Some("rate_limit_exceeded"))),
        ("authentication_error", _) => Some((401, "authentication_error", Some("invalid_api_key"))),
        ("permission_error", _) => Some((403, "permission_error", None)),
        ("not_found_error", _) => Some((404, "not_found_error", None)),
        ("request_too_large", _) => Some((413, "invalid_request_error", Some("request_too_large"))),
        ("invalid_request_error", _) => Some((400, "invalid_request_error", None)),
        ("api_error", _) => Some((500, "server_error", None)),
        _ => None,
    };
    common::vendor_error(status, e, class)
}

/// Anthropic stream events in, chat chunks out.
///
/// Content blocks are numbered by the stream; tool calls are numbered among tool calls, as
/// OpenAI's `tool_calls[].index` is, so the decoder remembers which block is which.
#[derive(Debug)]
pub struct Decoder {
    pub(crate) stream: Translated,
    /// Usage from message_start, updated by message_delta.
    usage: Value,
    blocks: Vec<Block>,
    calls: usize,
    finish: Option<&'static str>,
    finished: bool,
}

#[derive(Debug)]
enum Block {
    Text,
    /// A tool call: its index among calls, and its `input` from content_block_start until an
    /// argument delta arrives (`None` after): a call without deltas still gets its arguments.
    Tool(usize, Option<String>),
    Thinking(Value),
    Other,
}

impl Decoder {
    pub fn new(include_usage: bool) -> Decoder {
        Decoder {
            stream: Translated::new(include_usage),
            usage: json!({}),
            blocks: Vec::new(),
            calls: 0,
            finish: None,
            finished: false,
        }
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.get("input_tokens").map(|_| usage(&self.usage))
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> ChatChunk {
        self.stream.chunk(delta, finish)
    }

    /// The chunks one stream event (its `event:` type and its data) carries.
    pub fn event(&mut self, event: Option<&str>, data: &str) -> Result<Vec<ChatChunk>, ApiError> {
        let Ok(data) = serde_json::from_str::<Value>(data) else {
            return Ok(Vec::new());
        };
        let kind = event
            .or_else(|| data.get("type").and_then(Value::as_str))
            .unwrap_or_default();
        let index = data.get("index").and_then(Value::as_u64).map(|i| i as usize);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &data["message"];
                self.stream.id = m.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                if let Some(u) = m.get("usage").filter(|u| u.is_object()) {
                    self.usage = u.clone();
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            "content_block_start" => {
                let b = &data["content_block"];
                let block = match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            out.push(self.chunk(json!({"content": t}), None));
                        }
                        Block::Text
                    }
                    Some("tool_use") => {
                        let call = tool_call(b);
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": self.calls, "id": call.id, "type": "function",
                                "function": {"name": call.function.name, "arguments": ""}}]}),
                            None,
                        ));
                        self.calls += 1;
                        Block::Tool(self.calls - 1, Some(call.function.arguments))
                    }
                    Some("thinking") => Block::Thinking(b.clone()),
                    Some("redacted_thinking") => {
                        out.push(self.chunk(json!({"thinking_blocks": [b]}), None));
                        Block::Other
                    }
                    _ => Block::Other,
                };
                self.set_block(index, block);
            }
            "content_block_delta" => {
                let d = &data["delta"];
                let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
                let block = index.and_then(|i| self.blocks.get_mut(i));
                match (d.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), _) => out.push(self.chunk(json!({"content": s("text")}), None)),
                    (Some("input_json_delta"), Some(Block::Tool(call, pending))) if !s("partial_json").is_empty() => {
                        let call = *call;
                        *pending = None;
                        out.push(self.chunk(
                            json!({"tool_calls": [{"index": call, "function": {"arguments": s("partial_json")}}]}),
                            None,
                        ));
                    }
                    (Some("thinking_delta"), Some(Block::Thinking(b))) => {
                        append(b, "thinking", s("thinking"));
                        out.push(self.chunk(json!({"reasoning_content": s("thinking")}), None));
                    }
                    (Some("signature_delta"), Some(Block::Thinking(b))) => append(b, "signature", s("signature")),
                    _ => {}
                }
            }
            "content_block_stop" => {
                let delta = match index.and_then(|i| self.blocks.get_mut(i)) {
                    Some(Block::Thinking(b)) => Some(json!({"thinking_blocks": [b]})),
                    Some(Block::Tool(call, pending @ Some(_))) => {
                        let args = pending.take().unwrap_or_default();
                        Some(json!({"tool_calls": [{"index": call, "function": {"arguments": args}}]}))
                    }
                    _ => None,
                };
                if let Some(delta) = delta {
                    out.push(self.chunk(delta, None));
                }
            }
            "message_delta" => {
                if let Some(u) = data.get("usage").and_then(Value::as_object) {
                    for (k, v) in u {
                        if !v.is_null() {
                            self.usage[k] = v.clone();
                        }
                    }
                }
                let reason = data["delta"].get("stop_reason").and_then(Value::as_str);
                self.finish = Some(stop_reason_to_finish(reason.unwrap_or("end_turn")));
                out.push(self.chunk(json!({}), self.finish));
            }
            "message_stop" => {
                self.finished = true;
                out.extend(self.stream.usage_chunk(self.usage()));
            }
            "error" => {
                let e = data.get("error").cloned().unwrap_or_else(|| json!({}));
                return Err(error_object(500, &e));
            }
            _ => {}
        }
        Ok(out)
    }

    fn set_block(&mut self, index: Option<usize>, block: Block) {
        let Some(i) = index else { return };
        // An index far past the blocks seen is a broken stream, not a reason to allocate.
        if i > self.blocks.len() + 64 {
            return;
        }
        while self.blocks.len() <= i {
            self.blocks.push(Block::Other);
        }
        self.blocks[i] = block;
    }
}

fn append(b: &mut Value, key: &str, text: &str) {
    let mut s = b.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    s.push_str(text);
    b[key] = Value::String(s);
}

// The Messages API inbound: a client's request read into the IR, the answer written back.

/// The Messages request fields memgate reads; the rest flows on to the provider.
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<Turn>,
    #[serde(default)]
    pub(crate) system: Option<Value>,
    #[serde(default)]
    pub(crate) max_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(flatten)]
    pub(crate) rest: Rest,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Turn {
    pub(crate) role: String,
    pub(crate) content: Value,
}

/// Whose translation a Messages request gets when its routes go to providers of `kinds`: all
/// one kind, that kind's (Anthropic's is none at all); mixed fallbacks, the strictest, OpenAI's,
/// which every kind accepts.
pub(crate) fn translation_for(mut kinds: impl Iterator<Item = ProviderKind>) -> ProviderKind {
    let Some(first) = kinds.next() else {
        return ProviderKind::Openai;
    };
    match kinds.all(|k| k == first) {
        true => first,
        false => ProviderKind::Openai,
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
pub(crate) fn error_body(e: &ApiError) -> Value {
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
pub(crate) fn to_chat(req: MessagesRequest, kind: ProviderKind) -> Result<ChatRequest, ApiError> {
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
                rest.insert(k, chat_tools(&v)?);
            }
            "tool_choice" => {
                parallel = v.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|d| !d);
                rest.insert(k, chat_tool_choice(&v)?);
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
            Some("tool_use") => calls.push(tool_call(&b)),
            Some("thinking" | "redacted_thinking") if native => thinking.push(b),
            _ => {}
        }
    }
    let mut m = Message::assistant(text, calls);
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

fn chat_tools(v: &Value) -> Result<Value, ApiError> {
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

fn chat_tool_choice(v: &Value) -> Result<Value, ApiError> {
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
pub(crate) fn messages_usage(u: Option<&Usage>) -> Value {
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
pub(crate) fn message_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        _ => random_id("msg_"),
    }
}

pub(crate) fn from_chat(answer: &ChatResponse) -> Value {
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
        "usage": messages_usage(answer.usage.as_ref()),
    })
}

fn tool_use(id: &str, name: &str, arguments: &str) -> Value {
    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn system_tools_and_results_map_to_messages() {
        let r = req(json!({
            "model": "claude-sonnet-4", "stream": true, "stream_options": {"include_usage": true},
            "temperature": 0.2, "stop": "END", "top_k": 5, "parallel_tool_calls": false,
            "providerOptions": {"gateway": {"order": ["x"]}}, "models": ["a/b"],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "greet Bob"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "greet", "arguments": "{\"name\":\"Bob\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "Hello, Bob!"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "greet", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        }));
        let b = Value::Object(messages_body(&r).unwrap());
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert_eq!(b["top_k"], 5);
        assert_eq!(b["temperature"], 0.2);
        for foreign in ["stream_options", "parallel_tool_calls", "providerOptions", "models"] {
            assert!(b.get(foreign).is_none(), "{foreign} sent to Anthropic");
        }
        assert_eq!(
            b["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
        let m = b["messages"].as_array().unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0]["content"][1]["source"]["media_type"], "image/png");
        assert_eq!(m[1]["content"][0]["input"], json!({"name": "Bob"}));
        assert_eq!(m[2]["content"][0]["type"], "tool_result");
        assert_eq!(m[2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(m[2]["content"][1]["text"], "thanks");
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn cache_control_and_image_urls_pass_through() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}}],
                "cache_control": {"type": "ephemeral", "ttl": "1h"}}
        ], "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {"type": "ephemeral"}}],
           "tool_choice": {"type": "function", "function": {"name": "f"}}}));
        let b = Value::Object(messages_body(&r).unwrap());
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}])
        );
        let image = &b["messages"][0]["content"][0];
        assert_eq!(image["source"], json!({"type": "url", "url": "https://x.test/cat.png"}));
        assert_eq!(image["cache_control"]["ttl"], "1h");
        assert_eq!(b["tools"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "f"}));
    }

    #[test]
    fn stream_rebuilds_text_tools_thinking_and_usage() {
        let mut d = Decoder::new(true);
        let events = [
            r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let mut chunks = Vec::new();
        for e in events {
            chunks.extend(d.event(None, e).unwrap());
        }
        let deltas: Vec<Value> = chunks.iter().map(|c| serde_json::to_value(c).unwrap()).collect();
        assert_eq!(
            deltas[2]["choices"][0]["delta"]["thinking_blocks"][0]["signature"],
            "sig"
        );
        assert_eq!(deltas[3]["choices"][0]["delta"]["tool_calls"][0]["id"], "toolu_9");
        assert_eq!(
            deltas[4]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        assert_eq!(deltas[5]["choices"][0]["finish_reason"], "tool_calls");
        let u = chunks.last().unwrap().usage.clone().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (100, 7));
        assert_eq!(u.rest["prompt_tokens_details"]["cached_tokens"], 90);
        assert!(d.finished());
    }

    #[test]
    fn a_streamed_call_without_argument_deltas_gets_its_input() {
        let mut d = Decoder::new(false);
        let mut args = String::new();
        for e in [
            r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"now","input":{}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
        ] {
            for c in d.event(None, e).unwrap() {
                let v = serde_json::to_value(&c).unwrap();
                if let Some(a) = v["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
                    args.push_str(a);
                }
            }
        }
        assert_eq!(args, "{}");
    }

    #[test]
    fn foreign_ids_are_made_acceptable_alike_in_call_and_result() {
        let r = req(json!({"model": "m", "temperature": 1.6, "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "functions.get:0", "type": "function",
                "function": {"name": "get", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "functions.get:0", "content": "x", "is_error": true}
        ]}));
        let b = Value::Object(messages_body(&r).unwrap());
        assert_eq!(b["messages"][0]["content"][0]["id"], "functions_get_0");
        assert_eq!(b["messages"][1]["content"][0]["tool_use_id"], "functions_get_0");
        assert_eq!(b["messages"][1]["content"][0]["is_error"], true);
        assert_eq!(b["temperature"], 1.0);
    }

    #[test]
    fn errors_map_to_openai_types() {
        let e = error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            (e.status, e.kind.as_str(), e.message.as_str()),
            (503, "server_error", "Overloaded")
        );
        let e = error(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        let e = error(
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!((e.status, e.code.as_deref()), (401, Some("invalid_api_key")));
        assert_eq!(error(529, b"busy").status, 503);
    }

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
