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
use crate::ir::{ChatChunk, Message, Usage};
use crate::memory::Memory;
use crate::router::Candidate;
use crate::wire::anthropic::{
    error_body, finish_reason_to_stop, from_chat, message_id, messages_usage as usage, to_chat, translation_for,
    turns as anthropic_turns, Decoder, MessagesRequest,
};
use http_types::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

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
    let kind = translation_for(candidates.iter().map(|c| c.route.provider.kind));
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
            let (messages, turn) =
                Memory::begin(&ctx.app.memory, &ctx.payer(), at, chat.messages, &asked, &chat.rest).await?;
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
            decoder: Decoder::new(false),
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
        for chunk in self.decoder.event(ev.event.as_deref(), &ev.data)? {
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
