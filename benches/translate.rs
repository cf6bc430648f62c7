//! Translation benchmark: what the Anthropic and Gemini adapters add per request and per
//! streamed event, next to the OpenAI adapter (which only frames and parses).
//!
//! `cargo bench --bench translate` prints medians of 15 rounds; it asserts nothing. Inputs are
//! the recorded fixtures: a 20-turn chat request with a tool, each vendor's non-stream answer,
//! and each vendor's streamed tool call.

use memgate::config::Config;
use memgate::http::sse;
use memgate::ir::ChatRequest;
use memgate::router::Router;
use serde_json::json;
use std::time::Instant;

const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median microseconds per call of `f`, run `n` times a round.
fn time(n: usize, mut f: impl FnMut()) -> f64 {
    let rounds = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        })
        .collect();
    median(rounds)
}

fn events(path: &str) -> Vec<sse::Event> {
    let text = std::fs::read_to_string(path).expect("fixture");
    let sep = if text.contains("\r\n\r\n") { "\r\n\r\n" } else { "\n\n" };
    text.split(sep)
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            Some(sse::Event { event, data: data? })
        })
        .collect()
}

fn main() {
    let config = Config::parse(
        "[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
         [providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:1\"\n\
         [providers.gemini]\nkind = \"gemini\"\nbase_url = \"http://127.0.0.1:1\"\n",
    )
    .expect("config");
    let router = Router::new(&config).expect("router");
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..10 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what is {i} + {i}? Explain briefly.")}));
        messages.push(json!({"role": "assistant", "content": format!("{i} + {i} = {}. Adding a number to itself doubles it.", i * 2)}));
    }
    let req: ChatRequest = serde_json::from_value(json!({
        "model": "m", "messages": messages, "temperature": 0.2, "max_tokens": 300,
        "tools": [{"type": "function", "function": {"name": "helloWorld", "description": "Greets someone",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                "additionalProperties": false}}}]
    }))
    .expect("request");
    let request_bytes = serde_json::to_vec(&req).expect("bytes").len();
    println!("translation cost, medians of {ROUNDS} rounds (µs per call)");
    println!("request: 21 messages + 1 tool, {request_bytes} bytes as OpenAI JSON");
    println!();
    println!(
        "{:<10} {:>14} {:>14} {:>16} {:>14}",
        "kind", "build request", "parse answer", "decode event", "events/stream"
    );
    let kinds = [
        (
            "openai",
            "fixtures/openai/042_chat_count_json/response.json",
            "fixtures/openai/111_chat_tool_call_bob_stream/response.sse",
        ),
        (
            "anthropic",
            "fixtures/anthropic/042_count_json/response.json",
            "fixtures/anthropic/110_tool_call_stream/response.sse",
        ),
        (
            "gemini",
            "fixtures/gemini/042_count_json/response.json",
            "fixtures/gemini/110_tool_call_stream/response.sse",
        ),
    ];
    let mut build = Vec::new();
    for (kind, answer, stream) in kinds {
        let provider = router.resolve(&format!("{kind}/m")).expect("route").provider;
        let body = std::fs::read(answer).expect("answer fixture");
        let evs = events(stream);
        let b = time(2000, || {
            std::hint::black_box(provider.chat_request(&req, None).expect("build"));
        });
        let p = time(2000, || {
            std::hint::black_box(provider.chat_response(&body).expect("parse"));
        });
        let d = time(200, || {
            let mut dec = provider.chat_decoder(&req);
            for ev in &evs {
                std::hint::black_box(dec.event(ev).expect("decode"));
            }
        }) / evs.len() as f64;
        println!("{kind:<10} {b:>14.2} {p:>14.2} {d:>16.2} {:>14}", evs.len());
        build.push(b);
    }
    println!();
    println!(
        "request building vs OpenAI framing: anthropic {:.2}x, gemini {:.2}x",
        build[1] / build[0],
        build[2] / build[0]
    );
}
