//! Property test: the format converters never panic, whatever JSON they are fed.
//!
//! A seeded generator builds arbitrary JSON biased towards the words the converters look for
//! (roles, block types, vendor field names, huge and negative numbers), both from scratch and
//! by mutating real requests, answers and stream events from `fixtures/`. Every inbound
//! converter, every provider's request builder, answer and error reader and stream decoder, and
//! every stream encoder gets each value. Errors are fine; a panic fails the test with the seed
//! and input that caused it.

use super::chat::ChatEncoder;
use super::chunks::{Chunks, Encode, Prompt};
use super::messages::MessagesEncoder;
use super::relay::Translate;
use super::responses_chat::ResponsesEncoder;
use crate::config::{ProviderConfig, ProviderKind};
use crate::http::sse;
use crate::ir::{ChatRequest, ChatResponse, PassthroughRequest};
use crate::providers::Provider;
use crate::wire::anthropic::{self as messages, MessagesRequest};
use crate::wire::responses::{self, items};
use serde_json::{json, Map, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }

    /// A word the converters look for.
    fn word(&mut self) -> &'static str {
        if self.below(8) == 0 {
            self.pick(EVENTS)
        } else {
            self.pick(WORDS)
        }
    }
}

/// Anthropic's stream event names; also used as JSON words.
const EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
    "ping",
];
const WORDS: &[&str] = &[
    "role",
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "model",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "image",
    "source",
    "base64",
    "media_type",
    "data",
    "file",
    "file_data",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "call_id",
    "tool_call_id",
    "tool_use_id",
    "input",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "signature",
    "thinking_blocks",
    "cache_control",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "thoughtSignature",
    "thought",
    "candidates",
    "finishReason",
    "SAFETY",
    "STOP",
    "MAX_TOKENS",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "message",
    "delta",
    "index",
    "partial_json",
    "input_json_delta",
    "text_delta",
    "thinking_delta",
    "signature_delta",
    "content_block",
    "stop_reason",
    "usage",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens",
    "completion_tokens",
    "choices",
    "finish_reason",
    "stream",
    "tools",
    "tool_choice",
    "auto",
    "any",
    "none",
    "required",
    "parameters",
    "input_schema",
    "properties",
    "$ref",
    "#/$defs/x",
    "$defs",
    "anyOf",
    "items",
    "stop",
    "max_tokens",
    "max_output_tokens",
    "instructions",
    "function_call",
    "function_call_output",
    "output",
    "output_text",
    "input_text",
    "input_image",
    "embedding",
    "embeddings",
    "values",
    "status",
    "code",
    "details",
    "reason",
    "API_KEY_INVALID",
    "data:image/png;base64,AAAA",
    "data:",
    "https://x.test/a.png",
    "\u{0}",
    "é",
    "🦀",
    "",
];

fn number(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(-1),
        3 => json!(1.5e300),
        _ => json!(rng.below(5)),
    }
}

fn value(rng: &mut Rng, depth: usize) -> Value {
    let leaf = depth == 0 || rng.below(3) == 0;
    match rng.below(if leaf { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => number(rng),
        3 => Value::String(rng.word().to_owned()),
        4 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(5) {
                m.insert(rng.word().to_owned(), value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// `seed` with one node somewhere replaced by an arbitrary value.
fn mutate(rng: &mut Rng, seed: &Value) -> Value {
    let mut v = seed.clone();
    let replacement = value(rng, 3);
    let depth = rng.below(6);
    replace(rng, &mut v, depth, replacement);
    v
}

fn replace(rng: &mut Rng, node: &mut Value, depth: usize, with: Value) {
    let len = match node {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if depth == 0 || len == 0 {
        *node = with;
        return;
    }
    let i = rng.below(len);
    let child = match node {
        Value::Object(m) => m.values_mut().nth(i),
        Value::Array(a) => a.get_mut(i),
        _ => None,
    };
    if let Some(c) = child {
        replace(rng, c, depth - 1, with);
    }
}

/// Real documents to mutate: every fixture body and stream event under fixtures/.
fn seeds() -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out = vec![
        json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"type": ["string", "null"]}}}}}],
            "tool_choice": "required", "stream": true}),
        json!({"model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "thinking",
                "thinking": "t", "signature": "s"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "f"}}),
        json!({"model": "m", "input": [{"role": "user", "content": "hi"}, {"type": "function_call", "call_id": "c",
            "name": "f", "arguments": "{}"}, {"type": "function_call_output", "call_id": "c", "output": "x"}],
            "tools": [{"type": "function", "name": "f"}], "text": {"format": {"type": "json_schema", "schema": {}}}}),
    ];
    let dirs = std::fs::read_dir(&root).into_iter().flatten().flatten();
    for vendor in dirs {
        for case in std::fs::read_dir(vendor.path()).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(case.path().join("response.json")) {
                out.extend(serde_json::from_str::<Value>(&text).ok());
            }
            if let Ok(text) = std::fs::read_to_string(case.path().join("response.sse")) {
                let data = text.lines().filter_map(|l| l.strip_prefix("data: "));
                out.extend(data.filter_map(|d| serde_json::from_str::<Value>(d).ok()));
            }
        }
    }
    out
}

fn providers() -> Vec<Provider> {
    [ProviderKind::Openai, ProviderKind::Anthropic, ProviderKind::Gemini]
        .into_iter()
        .map(|kind| {
            let cfg = ProviderConfig {
                kind,
                base_url: Some("http://127.0.0.1:1".to_owned()),
                api_key: Some("k".to_owned()),
                api_key_env: None,
                models: Default::default(),
                responses: None,
                stream_usage: None,
                slots: None,
                aliases: Default::default(),
                dir: None,
                context_window: None,
                context_windows: Default::default(),
            };
            Provider::new(kind.name(), &cfg).unwrap()
        })
        .collect()
}

/// Every converter, fed one value.
fn exercise(v: &Value, providers: &[Provider], rng: &mut Rng) {
    let bytes = v.to_string().into_bytes();
    let _ = items::input_to_messages(v);
    let mut chats: Vec<ChatRequest> = serde_json::from_value(v.clone()).into_iter().collect();
    for kind in [ProviderKind::Openai, ProviderKind::Anthropic, ProviderKind::Gemini] {
        if let Ok(m) = serde_json::from_value::<MessagesRequest>(v.clone()) {
            chats.extend(messages::to_chat(m, kind).ok());
        }
    }
    if let Ok(r) = serde_json::from_value::<PassthroughRequest>(v.clone()) {
        chats.extend(responses::to_chat(r).ok());
    }
    if let Ok(answer) = serde_json::from_value::<ChatResponse>(v.clone()) {
        let _ = messages::from_chat(&answer);
        let _ = responses::from_chat(&answer);
    }
    for p in providers {
        for req in &chats {
            let _ = p.chat_request(req, None);
        }
        let _ = p.chat_response(&bytes);
        let _ = p.error(rng.below(600) as u16, &bytes);
        let _ = p.embeddings_response(&bytes, "m");
        if let Ok(r) = serde_json::from_value::<PassthroughRequest>(v.clone()) {
            let _ = p.embeddings_request(&r, None);
        }
    }
}

/// A stream of arbitrary events through each provider's decoder and each format's encoder.
fn stream(events: &[(Option<String>, String)], providers: &[Provider]) {
    let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [],
        "stream_options": {"include_usage": true}}))
    .unwrap();
    for p in providers {
        fn run(t: &mut impl Translate, events: &[(Option<String>, String)]) {
            for (event, data) in events {
                let _ = t.event(sse::Event {
                    event: event.clone(),
                    data: data.clone(),
                });
            }
            let _ = (t.answer(), t.usage(), t.finished(), t.usage_estimated());
        }
        fn with(encoder: impl Encode, p: &Provider, req: &ChatRequest, events: &[(Option<String>, String)]) {
            let prompt = Prompt::of(req.clone());
            run(
                &mut Chunks::new(p.chat_decoder(req), encoder, "m".to_owned(), prompt),
                events,
            );
        }
        with(ChatEncoder, p, &req, events);
        with(ResponsesEncoder::new(), p, &req, events);
        with(MessagesEncoder::default(), p, &req, events);
    }
}

#[test]
fn converters_never_panic_on_arbitrary_json() {
    let seed = std::env::var("MEMGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rounds: usize = std::env::var("MEMGATE_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8000);
    let mut rng = Rng(seed | 1);
    let seeds = seeds();
    assert!(seeds.len() > 50, "fixtures should give many seeds, got {}", seeds.len());
    let providers = providers();
    for round in 0..rounds {
        let v = match rng.below(3) {
            0 => value(&mut rng, 5),
            _ => {
                let s = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, s)
            }
        };
        let events: Vec<(Option<String>, String)> = (0..rng.below(12))
            .map(|_| {
                let s = &seeds[rng.below(seeds.len())];
                let data = if rng.below(4) == 0 {
                    value(&mut rng, 3)
                } else {
                    mutate(&mut rng, s)
                };
                let event = (rng.below(2) == 0).then(|| rng.pick(EVENTS).to_owned());
                (event, data.to_string())
            })
            .collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            exercise(&v, &providers, &mut rng);
            stream(&events, &providers);
        }));
        assert!(
            outcome.is_ok(),
            "a converter panicked (MEMGATE_FUZZ_SEED={seed}, round {round}) on\n{v}\nwith events {events:?}"
        );
    }
}
