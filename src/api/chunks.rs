//! Streams translated through the chat IR: a provider's [`Decoder`] turns upstream events into
//! chat chunks, an inbound format's [`Encode`] turns the chunks into the client's frames.
//!
//! Every inbound format (chat completions, Responses, Messages) over every provider kind goes
//! through here, except Responses to a provider that serves it natively.

use super::relay::Translate;
use crate::error::ApiError;
use crate::http::sse;
use crate::ir::tokens;
use crate::ir::{ChatChunk, ChatRequest, Message, Rest, ToolCall, Usage};
use crate::providers::Decoder;
use serde_json::Value;

/// An inbound format's side of a translated stream.
pub(crate) trait Encode: Send + 'static {
    /// The client's frames for one chat chunk (`model` already set to the client's name).
    /// With the stream's first chunk, `opening` is the usage the provider reported before any
    /// content (Anthropic's input tokens), which no chat chunk carries; `None` after it.
    fn chunk(&mut self, chunk: &ChatChunk, opening: Option<&Usage>) -> Vec<Vec<u8>>;
    /// The frames that close a complete answer.
    fn finish(&mut self, usage: Option<&Usage>) -> Vec<Vec<u8>>;
    /// The frame reporting a stream that broke off.
    fn error_frame(&self, e: &ApiError) -> Vec<u8>;
}

/// What a request sent the model, kept to estimate its tokens when the upstream reports no
/// usage (a local server that ignores `include_usage`). Estimated only then, at the end.
pub(crate) struct Prompt {
    messages: Vec<Message>,
    tools: Option<Value>,
}

impl Prompt {
    /// The request as sent (its messages are moved, not copied).
    pub fn of(req: ChatRequest) -> Prompt {
        let mut rest = req.rest;
        Prompt {
            messages: req.messages,
            tools: rest.remove("tools"),
        }
    }

    fn tokens(&self) -> u64 {
        let tools = self.tools.as_ref().map_or(0, |t| tokens::text(&t.to_string()));
        self.messages.iter().map(tokens::message).sum::<u64>() + tools
    }
}

/// Usage estimated with memory's token estimate (`ir::tokens`): the prompt as sent and the
/// answer as it arrived.
pub(crate) fn estimate(prompt: &Prompt, answer: Option<&Message>) -> Usage {
    let p = prompt.tokens();
    // Less the framing `tokens::message` adds to every message: that is the prompt's side.
    let framing = tokens::message(&Message::new("assistant", Value::Null));
    let c = answer.map_or(0, |m| tokens::message(m).saturating_sub(framing));
    Usage {
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
        rest: Rest::new(),
    }
}

/// Decoder, encoder, and what memory and the log need from the answer.
pub(crate) struct Chunks<E> {
    decoder: Decoder,
    encoder: E,
    model: String,
    usage: Option<Usage>,
    answer: Answer,
    prompt: Prompt,
    /// The last chunk's own fields (`id`, `object`, `created`…), for a usage chunk of our own.
    last: Rest,
    /// Whether a chunk has gone to the encoder (the opening usage goes with the first only).
    started: bool,
    done: bool,
}

impl<E: Encode> Chunks<E> {
    /// `model` is the name the client asked for, which every chunk carries back; `prompt` is
    /// what was sent, for an estimate when the upstream reports no usage.
    pub fn new(decoder: Decoder, encoder: E, model: String, prompt: Prompt) -> Self {
        Chunks {
            decoder,
            encoder,
            model,
            usage: None,
            answer: Answer::default(),
            prompt,
            last: Rest::new(),
            started: false,
            done: false,
        }
    }

    fn reported(&self) -> Option<Usage> {
        self.usage.clone().or_else(|| self.decoder.usage())
    }
}

impl<E: Encode> Translate for Chunks<E> {
    fn event(&mut self, ev: sse::Event) -> Result<Vec<Vec<u8>>, ApiError> {
        let mut frames = Vec::new();
        for mut chunk in self.decoder.event(&ev)? {
            chunk.model.clone_from(&self.model);
            if chunk.usage.is_some() {
                self.usage.clone_from(&chunk.usage);
            }
            if let Some(c) = chunk.choices.iter().find(|c| c.index == 0) {
                self.answer.add(&c.delta);
            }
            // Read once, not per chunk: a decoder builds its usage afresh on each call.
            let opening = if self.started { None } else { self.decoder.usage() };
            self.started = true;
            self.last.clone_from(&chunk.rest);
            frames.extend(self.encoder.chunk(&chunk, opening.as_ref()));
        }
        if !self.done && self.decoder.finished() {
            self.done = true;
            if self.reported().is_none() && self.decoder.include_usage() {
                // The client asked for a usage chunk and the upstream sent none: ours, estimated.
                let mut rest = std::mem::take(&mut self.last);
                rest.entry("object").or_insert_with(|| "chat.completion.chunk".into());
                let chunk = ChatChunk {
                    model: self.model.clone(),
                    choices: Vec::new(),
                    usage: self.usage(),
                    rest,
                };
                frames.extend(self.encoder.chunk(&chunk, None));
            }
            let usage = self.usage();
            frames.extend(self.encoder.finish(usage.as_ref()));
        }
        Ok(frames)
    }

    fn finished(&self) -> bool {
        self.done
    }

    /// What the upstream reported, else an estimate ([`Translate::usage_estimated`] says which).
    fn usage(&self) -> Option<Usage> {
        self.reported()
            .or_else(|| Some(estimate(&self.prompt, self.answer.message().as_ref())))
    }

    fn usage_estimated(&self) -> bool {
        self.reported().is_none()
    }

    fn answer(&self) -> Option<Message> {
        self.answer.message()
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        self.encoder.error_frame(e)
    }
}

/// The first choice's message, put back together from its deltas.
#[derive(Default)]
pub(crate) struct Answer {
    started: bool,
    text: String,
    calls: Vec<ToolCall>,
}

impl Answer {
    pub fn add(&mut self, delta: &Value) {
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
                self.calls
                    .push(ToolCall::function(String::new(), String::new(), String::new()));
            }
            // The id and name come whole (some servers repeat them on every fragment); only the
            // arguments come in pieces.
            let call = &mut self.calls[index];
            let f = d.get("function");
            for (field, value) in [
                (&mut call.id, str_of(d.get("id"))),
                (&mut call.function.name, str_of(f.and_then(|f| f.get("name")))),
            ] {
                if !value.is_empty() {
                    *field = value;
                }
            }
            call.function
                .arguments
                .push_str(&str_of(f.and_then(|f| f.get("arguments"))));
        }
    }

    pub fn message(&self) -> Option<Message> {
        self.started.then(|| {
            let content = if self.text.is_empty() && !self.calls.is_empty() {
                Value::Null
            } else {
                Value::String(self.text.clone())
            };
            let mut m = Message::new("assistant", content);
            m.tool_calls = (!self.calls.is_empty()).then(|| self.calls.clone());
            m
        })
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
