//! The Responses API over a provider that only chats (Anthropic, Gemini): the request becomes a
//! chat request, and the chat answer (whole or as chunks) becomes a `response` object or the
//! Responses event sequence (`response.created` … `response.output_text.delta` …
//! `response.completed`).

use super::chunks::Encode;
use super::items;
use crate::error::ApiError;
use crate::http::sse;
use crate::ir::{random_id, ChatChunk, ChatRequest, ChatResponse, Message, PassthroughRequest, Rest, Usage};
use serde_json::{json, Map, Value};

/// Request fields with no meaning once translated to chat; dropped.
const RESPONSES_ONLY: [&str; 12] = [
    "include",
    "store",
    "truncation",
    "background",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "max_tool_calls",
    "prompt",
    "previous_response_id",
    "conversation",
];
/// The chat request a Responses request asks for.
pub(super) fn to_chat(req: PassthroughRequest) -> Result<ChatRequest, ApiError> {
    let mut rest = Rest::new();
    let mut messages = Vec::new();
    if let Some(Value::String(i)) = req.rest.get("instructions") {
        messages.push(Message::new("system", Value::String(i.clone())));
    }
    messages.extend(items::input_to_messages(req.rest.get("input").unwrap_or(&Value::Null))?);
    for (k, v) in req.rest {
        match k.as_str() {
            "input" | "instructions" => {}
            "previous_response_id" | "conversation" if !v.is_null() => {
                return Err(ApiError::invalid_param(
                    &k,
                    format!(
                        "{k} needs a provider that stores responses (OpenAI); this model's provider only chats. Send \
                         the whole conversation as input, or let memgate remember it with x-thread-id and \
                         x-resource-id headers"
                    ),
                ))
            }
            "max_output_tokens" => {
                rest.insert("max_completion_tokens".to_owned(), v);
            }
            "tools" => {
                rest.insert(k, tools(&v)?);
            }
            "tool_choice" => {
                rest.insert(k, tool_choice(v));
            }
            "text" => {
                if let Some(f) = v.get("format").and_then(response_format) {
                    rest.insert("response_format".to_owned(), f);
                }
            }
            "reasoning" => {
                if let Some(e) = v.get("effort").filter(|e| e.is_string()) {
                    rest.insert("reasoning_effort".to_owned(), e.clone());
                }
            }
            _ if RESPONSES_ONLY.contains(&k.as_str()) => {}
            _ => {
                rest.insert(k, v);
            }
        }
    }
    let stream = req.stream;
    if stream == Some(true) {
        // response.completed carries usage, so the chunks must bring it.
        rest.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream,
        rest,
    })
}

/// Responses function tools (`{type, name, parameters}`) as chat tools.
fn tools(v: &Value) -> Result<Value, ApiError> {
    let list = ApiError::tools_list(v)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut f = t.as_object().cloned().unwrap_or_default();
                f.remove("type");
                out.push(json!({"type": "function", "function": f}));
            }
            other => {
                return Err(ApiError::invalid_param(
                    &format!("tools[{i}].type"),
                    format!(
                        "tool type {} is built into OpenAI's Responses API; this model's provider only takes \
                         function tools",
                        other.map_or("(none)".to_owned(), |o| format!("{o:?}"))
                    ),
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

fn tool_choice(v: Value) -> Value {
    match v.get("name").and_then(Value::as_str) {
        Some(name) => json!({"type": "function", "function": {"name": name}}),
        None => v,
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(f: &Value) -> Option<Value> {
    match f.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let mut schema = f.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

/// Chat usage in the Responses naming.
fn usage(u: &Usage) -> Value {
    let detail = |k: &str, d: &str| {
        u.rest
            .get(k)
            .and_then(|x| x.get(d))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")},
        "total_tokens": u.total_tokens,
    })
}

/// A `response` object. `status` is in_progress, completed or incomplete.
fn response(id: &str, created: u64, model: &str, status: &str, output: Vec<Value>, usage_: Option<&Usage>) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "usage": usage_.map(usage),
    })
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": if status == "in_progress" { json!([]) } else { json!([text_part(text)]) }})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// A whole chat answer as a `response` object.
pub(super) fn from_chat(answer: &ChatResponse) -> Value {
    let choice = answer.choices.first();
    let mut output = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        let text = crate::ir::content_text(&m.content);
        if !text.is_empty() || m.tool_calls.is_none() {
            output.push(message_item(&random_id("msg_"), "completed", &text));
        }
        for c in m.tool_calls.iter().flatten() {
            output.push(call_item(
                &random_id("fc_"),
                "completed",
                &c.id,
                &c.function.name,
                &c.function.arguments,
            ));
        }
    }
    let status = match choice.and_then(|c| c.finish_reason.as_deref()) {
        Some("length") => "incomplete",
        _ => "completed",
    };
    let created = answer.rest.get("created").and_then(Value::as_u64).unwrap_or(0);
    response(
        &random_id("resp_"),
        created,
        &answer.model,
        status,
        output,
        answer.usage.as_ref(),
    )
}

/// Chat chunks as Responses events, each with its `sequence_number`.
pub(super) struct ResponsesEncoder {
    id: String,
    model: String,
    created: u64,
    seq: u64,
    started: bool,
    /// Output items in order: the open one is the last.
    items: Vec<Item>,
    usage: Option<Usage>,
    incomplete: bool,
}

enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        /// The chat delta's `tool_calls[].index`.
        index: Option<u64>,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl ResponsesEncoder {
    pub fn new() -> Self {
        ResponsesEncoder {
            id: random_id("resp_"),
            model: String::new(),
            created: crate::clock::now_ms() / 1000,
            seq: 0,
            started: false,
            items: Vec::new(),
            usage: None,
            incomplete: false,
        }
    }

    /// One event: `type` first and `sequence_number` last, as OpenAI writes them.
    fn frame(&mut self, kind: &str, data: Map<String, Value>) -> Vec<u8> {
        let mut ordered = Map::new();
        ordered.insert("type".to_owned(), Value::String(kind.to_owned()));
        ordered.extend(data);
        ordered.insert("sequence_number".to_owned(), Value::from(self.seq));
        self.seq += 1;
        sse::frame(Some(kind), &Value::Object(ordered).to_string())
    }

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn response(&self, status: &str) -> Value {
        let output = self.items.iter().map(|i| i.done()).collect();
        response(&self.id, self.created, &self.model, status, output, self.usage.as_ref())
    }

    /// Closes the open item (the last) with its `…done` events.
    fn close(&mut self) -> Vec<Vec<u8>> {
        let index = self.items.len().saturating_sub(1);
        let Some(item) = self.items.last() else {
            return Vec::new();
        };
        let done = item.done();
        let events: Vec<(&str, Value)> = match item {
            Item::Text { id, text } => vec![
                (
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                ),
                (
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part(text)}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": index, "item": done}),
                ),
            ],
            Item::Call { id, arguments, .. } => vec![
                (
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments}),
                ),
                (
                    "response.output_item.done",
                    json!({"output_index": index, "item": done}),
                ),
            ],
        };
        events
            .into_iter()
            .map(|(k, v)| self.frame(k, Self::fields(v)))
            .collect()
    }

    /// Opens a new item after closing the open one.
    fn open(&mut self, item: Item, frames: &mut Vec<Vec<u8>>) {
        frames.extend(self.close());
        let index = self.items.len();
        let added = match &item {
            Item::Text { id, .. } => message_item(id, "in_progress", ""),
            Item::Call { id, call_id, name, .. } => call_item(id, "in_progress", call_id, name, ""),
        };
        let text_id = match &item {
            Item::Text { id, .. } => Some(id.clone()),
            Item::Call { .. } => None,
        };
        self.items.push(item);
        frames.push(self.frame(
            "response.output_item.added",
            Self::fields(json!({"output_index": index, "item": added})),
        ));
        if let Some(id) = text_id {
            frames.push(self.frame(
                "response.content_part.added",
                Self::fields(json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")})),
            ));
        }
    }
}

impl Item {
    fn done(&self) -> Value {
        match self {
            Item::Text { id, text } => message_item(id, "completed", text),
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => call_item(id, "completed", call_id, name, arguments),
        }
    }
}

impl Encode for ResponsesEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, _opening: Option<&Usage>) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        if !self.started {
            self.started = true;
            self.model.clone_from(&chunk.model);
            for kind in ["response.created", "response.in_progress"] {
                let r = self.response("in_progress");
                frames.push(self.frame(kind, Self::fields(json!({"response": r}))));
            }
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return frames;
        };
        if choice.finish_reason.as_deref() == Some("length") {
            self.incomplete = true;
        }
        let delta = &choice.delta;
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if !matches!(self.items.last(), Some(Item::Text { .. })) {
                let id = random_id("msg_");
                self.open(
                    Item::Text {
                        id,
                        text: String::new(),
                    },
                    &mut frames,
                );
            }
            let index = self.items.len() - 1;
            if let Some(Item::Text { id, text: all }) = self.items.last_mut() {
                all.push_str(text);
                let data = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text});
                frames.push(self.frame("response.output_text.delta", Self::fields(data)));
            }
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
            let f = call.get("function");
            let index = call.get("index").and_then(Value::as_u64);
            // A server may repeat the id on every fragment: a new call is a new index.
            let same = matches!(self.items.last(), Some(Item::Call { index: i, .. }) if index.is_some() && *i == index);
            if let (Some(call_id), false) = (call.get("id").and_then(Value::as_str), same) {
                let item = Item::Call {
                    id: random_id("fc_"),
                    index,
                    call_id: call_id.to_owned(),
                    name: s(f.and_then(|f| f.get("name"))),
                    arguments: String::new(),
                };
                self.open(item, &mut frames);
            }
            let piece = s(f.and_then(|f| f.get("arguments")));
            let index = self.items.len().saturating_sub(1);
            if let (false, Some(Item::Call { id, arguments, .. })) = (piece.is_empty(), self.items.last_mut()) {
                arguments.push_str(&piece);
                let data = json!({"item_id": id, "output_index": index, "delta": piece});
                frames.push(self.frame("response.function_call_arguments.delta", Self::fields(data)));
            }
        }
        frames
    }

    fn finish(&mut self, usage: Option<&Usage>) -> Vec<Vec<u8>> {
        if usage.is_some() {
            self.usage = usage.cloned();
        }
        let mut frames = self.close();
        let (kind, status) = if self.incomplete {
            ("response.incomplete", "incomplete")
        } else {
            ("response.completed", "completed")
        };
        let r = self.response(status);
        frames.push(self.frame(kind, Self::fields(json!({"response": r}))));
        frames
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        let data = json!({"type": "error", "code": e.code, "message": e.message, "param": e.param, "sequence_number": self.seq});
        sse::frame(Some("error"), &data.to_string())
    }
}
