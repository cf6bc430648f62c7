//! The Responses event sequence (`response.created` … `response.output_text.delta` …
//! `response.completed`) written from chat chunks, for a provider that only chats (Anthropic,
//! Gemini); the request and a whole answer translate in [`crate::wire::responses`].

use super::chunks::Encode;
use crate::error::ApiError;
use crate::http::sse;
use crate::ir::{random_id, ChatChunk, Usage};
use crate::wire::responses::{call_item, message_item, response, text_part};
use serde_json::{json, Map, Value};

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
