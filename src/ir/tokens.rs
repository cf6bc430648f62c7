//! A fast local token estimate, so thresholds never wait on a tokenizer or an upstream call.
//!
//! In the spirit of `tokenx` (what Mastra's OM uses): text is split into runs, and each run is
//! priced by kind. Whitespace is free; an ASCII word costs one token per 4 characters (so
//! "the" is 1, "information" 3); a digit run one per 3; each punctuation mark or symbol one;
//! a CJK ideograph or kana one each; a word in another alphabet one per 2 characters. BPE
//! tokenizers (cl100k, o200k) land a little below this on English prose, so thresholds trip
//! slightly early rather than late. Images count a flat 1,000 (their real price depends on
//! size and the provider). Every message adds 4 for its role and framing.

use crate::ir::Message;
use serde_json::Value;

/// Framing tokens every message costs (role, separators), as OpenAI's counting guide has it.
const PER_MESSAGE: u64 = 4;
/// A flat price for an image or file part.
const PER_ATTACHMENT: u64 = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Class {
    Space,
    AsciiWord,
    Digit,
    Cjk,
    OtherWord,
    Mark,
}

fn class(c: char) -> Class {
    match c {
        c if c.is_whitespace() => Class::Space,
        'a'..='z' | 'A'..='Z' | '_' => Class::AsciiWord,
        '0'..='9' => Class::Digit,
        '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{ac00}'..='\u{d7af}' => {
            Class::Cjk
        }
        c if c.is_alphabetic() => Class::OtherWord,
        _ => Class::Mark,
    }
}

fn run_cost(class: Class, len: u64) -> u64 {
    match class {
        Class::Space => 0,
        Class::AsciiWord => len.div_ceil(4),
        Class::Digit => len.div_ceil(3),
        Class::OtherWord => len.div_ceil(2),
        Class::Cjk | Class::Mark => len,
    }
}

/// Estimated tokens of a piece of text.
pub fn text(s: &str) -> u64 {
    let mut total = 0;
    let mut run: Option<(Class, u64)> = None;
    for c in s.chars() {
        let k = class(c);
        run = match run {
            Some((rk, n)) if rk == k => Some((rk, n + 1)),
            Some((rk, n)) => {
                total += run_cost(rk, n);
                Some((k, 1))
            }
            None => Some((k, 1)),
        };
    }
    total + run.map_or(0, |(k, n)| run_cost(k, n))
}

/// Estimated tokens of a JSON value's text: strings priced as text, attachments flat.
fn value(v: &Value) -> u64 {
    match v {
        Value::String(s) => text(s),
        Value::Array(items) => items.iter().map(value).sum(),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("image_url" | "input_image" | "image" | "file" | "input_file" | "input_audio") => PER_ATTACHMENT,
            // Field names and the part's `type` are framing, not text the model reads.
            _ => o.iter().filter(|(k, _)| *k != "type").map(|(_, v)| value(v)).sum(),
        },
        Value::Null => 0,
        other => text(&other.to_string()),
    }
}

/// Estimated tokens of one message as the model receives it.
pub fn message(m: &Message) -> u64 {
    let calls: u64 = m
        .tool_calls
        .iter()
        .flatten()
        .map(|c| text(&c.function.name) + text(&c.function.arguments))
        .sum();
    PER_MESSAGE + value(&m.content) + calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_runs_by_kind() {
        assert_eq!(text(""), 0);
        assert_eq!(text("the"), 1);
        assert_eq!(text("information"), 3);
        // Hello , how are you today ? → 2+1+1+1+1+2+1
        assert_eq!(text("Hello, how are you today?"), 9);
        assert_eq!(text("2026"), 2);
        assert_eq!(text("東京タワー"), 5);
        assert_eq!(text("   \n\t"), 0);
    }

    #[test]
    fn messages_count_parts_and_calls() {
        let m: Message = serde_json::from_value(serde_json::json!({
            "role": "user",
            "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
        }))
        .unwrap();
        assert_eq!(message(&m), PER_MESSAGE + 1 + PER_ATTACHMENT);
        let call: Message = serde_json::from_value(serde_json::json!({
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]
        }))
        .unwrap();
        assert!(message(&call) > PER_MESSAGE + 3);
    }
}
