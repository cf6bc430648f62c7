//! Golden replay tests: every inbound format (chat completions, Responses, Messages) over every
//! provider kind (OpenAI-compatible, Anthropic, Gemini), for a plain answer, a stream, a
//! streamed tool call and a tool result.
//!
//! Each case sends a real request to a real gateway in front of `memgate-mock` replaying the
//! vendor's recorded wire format, then compares two things with the files checked in under
//! `tests/golden/<case>/`: the upstream request memgate built (`upstream.json`: method, path,
//! query, the headers that matter, body) and the answer the client got (`client.json`, or
//! `client.sse` with every event). Ids memgate makes up and timestamps are normalised.
//!
//! After an intended change, regenerate them and review the diff:
//!
//! ```text
//! MEMGATE_BLESS=1 cargo test --test golden && git diff tests/golden
//! ```

mod common;

use common::{parse_sse, provider, repo, Gateway, Mock};
use serde_json::{json, Value};
use std::path::Path;

/// Provider kinds: (name in the config and model prefix, upstream model, fixture dir).
const KINDS: [(&str, &str, &str); 3] = [
    ("openai", "gpt-4o-mini", "fixtures/openai"),
    ("anthropic", "claude-sonnet-4", "fixtures/anthropic"),
    ("gemini", "gemini-2.5-flash", "fixtures/gemini"),
];
const FORMATS: [&str; 3] = ["chat", "responses", "messages"];
const SCENARIOS: [&str; 4] = ["text", "stream", "tool_stream", "tool_result"];

/// The id of the tool call the tool-result cases answer.
const CALL: &str = "toolu_01A09q90qw90lq917835lq9";
/// Headers of the upstream request worth pinning (credentials are configured test values).
const HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "anthropic-version",
    "x-goog-api-key",
    "content-type",
];

fn schema() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
}

/// The client's request for one case, in the inbound format's own shape.
fn request(format: &str, scenario: &str, model: &str) -> (&'static str, Value) {
    let stream = scenario.contains("stream");
    let prompt = match scenario {
        "text" | "stream" => "Count from 1 to 5",
        "tool_stream" => "greet Bob",
        _ => "greet Alice",
    };
    let tools = scenario.starts_with("tool");
    let alice = json!({"name": "Alice"});
    let mut body = match format {
        "chat" => {
            let mut messages = vec![json!({"role": "user", "content": prompt})];
            if scenario == "tool_result" {
                messages.push(
                    json!({"role": "assistant", "content": null, "tool_calls": [{"id": CALL, "type": "function",
                    "function": {"name": "helloWorld", "arguments": alice.to_string()}}]}),
                );
                messages.push(json!({"role": "tool", "tool_call_id": CALL, "content": "Hello, Alice!"}));
            }
            let mut b = json!({"model": model, "messages": messages});
            if tools {
                b["tools"] = json!([{"type": "function", "function": {"name": "helloWorld", "description": "Greets someone", "parameters": schema()}}]);
            }
            if stream {
                b["stream_options"] = json!({"include_usage": true});
            }
            b
        }
        "responses" => {
            let mut b = json!({"model": model, "input": prompt});
            if scenario == "tool_result" {
                b["input"] = json!([
                    {"role": "user", "content": prompt},
                    {"type": "function_call", "call_id": CALL, "name": "helloWorld", "arguments": alice.to_string()},
                    {"type": "function_call_output", "call_id": CALL, "output": "Hello, Alice!"}
                ]);
            }
            if tools {
                b["tools"] = json!([{"type": "function", "name": "helloWorld", "description": "Greets someone", "parameters": schema()}]);
            }
            b
        }
        _ => {
            let mut messages = vec![json!({"role": "user", "content": prompt})];
            if scenario == "tool_result" {
                messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": CALL, "name": "helloWorld", "input": alice}]}));
                messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": CALL, "content": "Hello, Alice!"}]}));
            }
            let mut b = json!({"model": model, "max_tokens": 256, "messages": messages});
            if tools {
                b["tools"] = json!([{"name": "helloWorld", "description": "Greets someone", "input_schema": schema()}]);
            }
            b
        }
    };
    if stream {
        body["stream"] = json!(true);
    }
    let path = match format {
        "chat" => "/v1/chat/completions",
        "responses" => "/v1/responses",
        _ => "/v1/messages",
    };
    (path, body)
}

/// Replaces what differs between runs: timestamps, and the ids memgate generates
/// (`call_`, `resp_`, `msg_`, `fc_` followed by 24 hex digits).
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if (k == "created" || k == "created_at") && x.is_number() {
                    *x = json!(0);
                } else {
                    normalise(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        Value::String(s) => {
            if let Some((prefix, rest)) = s.split_once('_') {
                let generated = ["call", "resp", "msg", "fc"].contains(&prefix)
                    && rest.len() == 24
                    && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
                if generated {
                    *s = format!("{prefix}_<generated>");
                }
            }
        }
        _ => {}
    }
}

/// SSE text with each event's JSON data normalised, one line per field.
fn normalise_sse(text: &str) -> String {
    let mut out = String::new();
    for (event, data) in parse_sse(text) {
        if let Some(e) = event {
            out.push_str(&format!("event: {e}\n"));
        }
        let data = match serde_json::from_str::<Value>(&data) {
            Ok(mut v) => {
                normalise(&mut v);
                v.to_string()
            }
            Err(_) => data,
        };
        out.push_str(&format!("data: {data}\n\n"));
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap() + "\n"
}

/// Compares `actual` with the golden file, or writes it when blessing; a mismatch is returned.
fn check(file: &Path, actual: &str, bless: bool) -> Option<String> {
    if bless {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(file).unwrap_or_default();
    if expected == actual {
        return None;
    }
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    Some(format!(
        "{} differs from line {}:\n  expected: {}\n  actual:   {}",
        file.display(),
        line + 1,
        expected.lines().nth(line).unwrap_or("(end of file)"),
        actual.lines().nth(line).unwrap_or("(end of output)"),
    ))
}

#[test]
fn every_format_over_every_provider_matches_its_golden_files() {
    let bless = std::env::var_os("MEMGATE_BLESS").is_some();
    let mocks: Vec<Mock> = KINDS.iter().map(|(_, _, dir)| Mock::start(dir)).collect();
    let config = format!(
        "{}[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-configured\"\n\
         [providers.gemini]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"gemini-configured\"\n",
        provider("openai", &mocks[0], ""),
        mocks[1].url,
        mocks[2].url
    );
    let gw = Gateway::start(&config);
    let root = repo().join("tests/golden");
    let mut failures = Vec::new();
    let mut cases = 0;
    for format in FORMATS {
        for ((kind, model, _), mock) in KINDS.iter().zip(&mocks) {
            for scenario in SCENARIOS {
                cases += 1;
                let case = format!("{format}_{kind}_{scenario}");
                mock.clear();
                let (path, body) = request(format, scenario, &format!("{kind}/{model}"));
                let res = gw.post(path, &[], &body);
                assert_eq!(res.status, 200, "{case}: {}", res.text());
                let client = if res
                    .header("content-type")
                    .is_some_and(|c| c.starts_with("text/event-stream"))
                {
                    ("client.sse", normalise_sse(&res.text()))
                } else {
                    let mut v = res.json();
                    normalise(&mut v);
                    ("client.json", pretty(&v))
                };
                let sent = mock.requests();
                assert_eq!(sent.len(), 1, "{case}: expected one upstream request, got {sent:?}");
                let r = &sent[0];
                assert!(r["fixture"].is_string(), "{case}: no fixture matched {}", r["body"]);
                let headers: serde_json::Map<String, Value> = HEADERS
                    .iter()
                    .filter_map(|h| Some((h.to_string(), r["headers"].get(*h)?.clone())))
                    .collect();
                let mut upstream = json!({
                    "method": r["method"], "path": r["path"], "query": r["query"], "headers": headers,
                    "body": serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap(),
                });
                normalise(&mut upstream);
                let dir = root.join(&case);
                failures.extend(check(&dir.join("upstream.json"), &pretty(&upstream), bless));
                failures.extend(check(&dir.join(client.0), &client.1, bless));
            }
        }
    }
    assert_eq!(cases, 36);
    assert!(
        failures.is_empty(),
        "{} golden file(s) differ:\n{}\n\nIf the change is intended: MEMGATE_BLESS=1 cargo test --test golden, then review \
         git diff tests/golden",
        failures.len(),
        failures.join("\n")
    );
}
