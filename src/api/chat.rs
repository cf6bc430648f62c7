//! `POST /v1/chat/completions`.

use super::relay::{relay, Translate};
use super::{parse_body, route, send, Ctx};
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{ChatRequest, FunctionCall, Message, ToolCall, Usage};
use crate::memory::Memory;
use crate::providers::Provider;
use http_types::Response;
use serde_json::Value;
use std::sync::Arc;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let (asked, route) = route(ctx, &mut req.model)?;
    let turn = match &ctx.thread {
        Some(at) => {
            let (messages, turn) =
                Memory::begin(&ctx.app, &ctx.caller, at, std::mem::take(&mut req.messages), &asked).await?;
            req.messages = messages;
            Some(turn)
        }
        None => None,
    };
    let upstream = route.provider.chat_request(&req, ctx.caller.byok.as_deref())?;
    let res = send(ctx, &upstream).await?;
    if req.is_stream() && res.is_event_stream() {
        let t = ChatStream {
            provider: route.provider,
            model: asked,
            done: false,
            usage: None,
            answer: Answer::default(),
        };
        return Ok(relay(ctx, res, t, turn));
    }
    let mut answer = route.provider.chat_response(&res.bytes().await?)?;
    answer.model = asked;
    if let Some(log) = &mut ctx.log {
        log.usage = answer.usage;
    }
    if let Some(turn) = turn {
        turn.finish(answer.choices.first().map(|c| c.message.clone()), true)
            .await?;
    }
    Ok(json_response(200, &answer))
}

/// Chat chunks in, chat chunks out, with `model` rewritten to the name the client used.
struct ChatStream {
    provider: Arc<Provider>,
    model: String,
    done: bool,
    usage: Option<Usage>,
    answer: Answer,
}

/// The first choice's message, put back together from its deltas.
#[derive(Default)]
struct Answer {
    started: bool,
    text: String,
    calls: Vec<ToolCall>,
}

impl Answer {
    fn add(&mut self, delta: &Value) {
        self.started = true;
        if let Some(t) = delta.get("content").and_then(Value::as_str) {
            self.text.push_str(t);
        }
        for d in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let str_of = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
            let index = d
                .get("index")
                .and_then(Value::as_u64)
                .map_or(self.calls.len(), |i| i as usize);
            // An index far past the calls seen is a broken stream, not a reason to allocate.
            if index > self.calls.len() {
                continue;
            }
            if index == self.calls.len() {
                self.calls.push(ToolCall {
                    id: String::new(),
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: String::new(),
                        arguments: String::new(),
                    },
                    rest: Default::default(),
                });
            }
            let call = &mut self.calls[index];
            call.id.push_str(&str_of(d.get("id")));
            let f = d.get("function");
            call.function.name.push_str(&str_of(f.and_then(|f| f.get("name"))));
            call.function
                .arguments
                .push_str(&str_of(f.and_then(|f| f.get("arguments"))));
        }
    }

    fn message(&self) -> Option<Message> {
        self.started.then(|| Message {
            role: "assistant".to_owned(),
            content: if self.text.is_empty() && !self.calls.is_empty() {
                Value::Null
            } else {
                Value::String(self.text.clone())
            },
            tool_calls: (!self.calls.is_empty()).then(|| self.calls.clone()),
            tool_call_id: None,
            rest: Default::default(),
        })
    }
}

impl Translate for ChatStream {
    fn event(&mut self, ev: sse::Event) -> Vec<Vec<u8>> {
        if ev.data == "[DONE]" {
            self.done = true;
            return vec![sse::frame(None, "[DONE]")];
        }
        match self.provider.chat_chunk(&ev.data) {
            Some(mut chunk) => {
                chunk.model.clone_from(&self.model);
                if chunk.usage.is_some() {
                    self.usage = chunk.usage;
                }
                if let Some(c) = chunk.choices.iter().find(|c| c.index == 0) {
                    self.answer.add(&c.delta);
                }
                vec![sse::frame(None, &serde_json::to_string(&chunk).unwrap_or_default())]
            }
            // Not a chunk (an error object, a vendor extension): the client sees it verbatim.
            None => vec![sse::frame(ev.event.as_deref(), &ev.data)],
        }
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn answer(&self) -> Option<Message> {
        self.answer.message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deltas_rebuild_text_and_tool_calls() {
        let mut a = Answer::default();
        assert!(a.message().is_none());
        a.add(&json!({"role": "assistant", "content": ""}));
        a.add(&json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "greet", "arguments": ""}}]}));
        a.add(&json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"name\":"}}]}));
        a.add(&json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Bob\"}"}}]}));
        a.add(&json!({"tool_calls": [{"index": 7, "function": {"arguments": "junk"}}]}));
        let m = a.message().unwrap();
        assert_eq!(m.content, Value::Null);
        let calls = m.tool_calls.unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].function.name.as_str()),
            ("call_1", "greet")
        );
        assert_eq!(calls[0].function.arguments, "{\"name\":\"Bob\"}");
        let mut t = Answer::default();
        t.add(&json!({"content": "Hel"}));
        t.add(&json!({"content": "lo"}));
        assert_eq!(t.message().unwrap().content, "Hello");
    }
}
