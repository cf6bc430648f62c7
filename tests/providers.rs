//! The Anthropic and Gemini adapters, `/v1/messages` and the replay provider, through a real
//! gateway in front of `memgate-mock` replaying each vendor's recorded wire format: what the
//! golden files cannot show on their own (errors, cache tokens, thinking, ids across a round
//! trip, embeddings, memory across formats, no upstream at all).

mod common;

use common::*;
use serde_json::{json, Value};

/// Mocks for fixtures/openai, fixtures/anthropic, fixtures/gemini, and a gateway in front of them
/// as providers `openai`, `anthropic` and `gemini`.
fn setup(extra: &str) -> (Vec<Mock>, Gateway) {
    let mocks: Vec<Mock> = ["fixtures/openai", "fixtures/anthropic", "fixtures/gemini"]
        .into_iter()
        .map(Mock::start)
        .collect();
    let config = format!(
        "{extra}\n{}[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-configured\"\n\
         [providers.gemini]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"gemini-configured\"\n",
        provider("openai", &mocks[0], ""),
        mocks[1].url,
        mocks[2].url
    );
    let gw = Gateway::start(&config);
    (mocks, gw)
}

const CLAUDE: &str = "anthropic/claude-sonnet-4";
const GEMINI: &str = "gemini/gemini-2.5-flash";

fn chat(gw: &Gateway, model: &str, messages: Value) -> Resp {
    gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": model, "messages": messages}),
    )
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[test]
fn vendor_errors_become_openai_errors_the_sdks_classify() {
    let (_mocks, gw) = setup("");
    let cases = [
        ("trigger-upstream-error", 429, "rate_limit_error"),
        ("trigger-overloaded", 503, "server_error"),
        ("trigger-bad-key", 401, "authentication_error"),
        ("trigger-invalid-request", 400, "invalid_request_error"),
    ];
    for model in [CLAUDE, GEMINI] {
        for (prompt, status, kind) in cases {
            let e = chat(&gw, model, user(prompt)).expect_error(status, kind);
            assert!(
                !e["message"].as_str().unwrap().contains("upstream answered"),
                "{model} {prompt}: {e}"
            );
        }
    }
    // Anthropic's 529 arrives as 529 on the wire; the client sees "overloaded", retryable.
    let e = chat(&gw, CLAUDE, user("trigger-overloaded")).expect_error(503, "server_error");
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("overloaded"), Some("Overloaded"))
    );
}

#[test]
fn messages_endpoint_answers_errors_in_anthropics_shape() {
    let (_mocks, gw) = setup("[auth]\nmode = \"keys\"\n");
    let key = String::from_utf8(gw.cli(&["keys", "create", "anthropic-sdk"]).stdout).unwrap();
    let key = key.trim();
    let body =
        json!({"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Count from 1 to 5"}]});
    let anthropic_error = |r: &Resp, status: u16, kind: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str()),
            (Some("error"), Some(kind)),
            "{v}"
        );
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    anthropic_error(&gw.post("/v1/messages", &[], &body), 401, "authentication_error");
    anthropic_error(
        &gw.post("/v1/messages", &[("x-api-key", "msk_wrong")], &body),
        401,
        "authentication_error",
    );
    // The Anthropic SDK sends its key as x-api-key.
    let ok = gw.post(
        "/v1/messages",
        &[("x-api-key", key), ("anthropic-version", "2023-06-01")],
        &body,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["content"][0]["text"], "1, 2, 3, 4, 5");
    let auth = [("x-api-key", key)];
    let r = common::request(&gw.addr, "POST", "/v1/messages", &auth, b"{not json");
    anthropic_error(&r, 400, "invalid_request_error");
    let mut bad = body.clone();
    bad["model"] = json!("nosuch/model");
    anthropic_error(&gw.post("/v1/messages", &auth, &bad), 400, "invalid_request_error");
    bad["model"] = json!(CLAUDE);
    bad["messages"][0]["content"] = json!("trigger-upstream-error");
    anthropic_error(&gw.post("/v1/messages", &auth, &bad), 429, "rate_limit_error");
    bad["messages"][0]["content"] = json!("trigger-overloaded");
    anthropic_error(&gw.post("/v1/messages", &auth, &bad), 503, "overloaded_error");
    bad["messages"][0]["role"] = json!("system");
    anthropic_error(&gw.post("/v1/messages", &auth, &bad), 400, "invalid_request_error");
}

#[test]
fn an_error_event_mid_stream_ends_the_clients_stream_with_an_error() {
    let (_mocks, gw) = setup("");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": CLAUDE, "stream": true, "messages": user("trigger-stream-error")}),
    );
    let events: Vec<String> = s.events().into_iter().map(|(_, _, d)| d).collect();
    assert!(events.iter().any(|d| d.contains("Sure, here")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "overloaded", "{events:?}");
    assert!(!events.iter().any(|d| d == "[DONE]"), "{events:?}");

    let mut s = Stream::open(
        &gw.addr,
        "/v1/messages",
        &[],
        &json!({"model": CLAUDE, "max_tokens": 64, "stream": true, "messages": user("trigger-stream-error")}),
    );
    let events = s.events();
    let (_, kind, data) = events.last().unwrap();
    assert_eq!(kind.as_deref(), Some("error"), "{events:?}");
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["error"]["type"],
        "overloaded_error"
    );
    assert!(!events.iter().any(|(_, k, _)| k.as_deref() == Some("message_stop")));
}

#[test]
fn cache_tokens_and_thinking_blocks_survive_the_translation() {
    let (mocks, gw) = setup("");
    let usage = chat(&gw, CLAUDE, user("cache-probe")).json()["usage"].clone();
    let cached = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let written = usage["cache_creation_input_tokens"].as_u64().unwrap();
    assert!(cached > 0 && written > 0, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= cached + written, "{usage}");
    // Streamed, the final usage chunk carries the same counts.
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": CLAUDE, "stream": true, "stream_options": {"include_usage": true}, "messages": user("cache-probe")}),
    );
    let events = s.events();
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].2).unwrap();
    assert!(
        usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{usage_chunk}"
    );

    let answer = chat(&gw, CLAUDE, user("Think step by step about 3+3")).json();
    let message = answer["choices"][0]["message"].clone();
    let block = message["thinking_blocks"][0].clone();
    assert_eq!(block["type"], "thinking");
    assert!(block["signature"].as_str().is_some_and(|s| !s.is_empty()), "{message}");
    assert!(message["reasoning_content"].as_str().is_some_and(|s| !s.is_empty()));
    // Sent back in the next turn, the block reaches Anthropic exactly as it came.
    let mut history = user("Think step by step about 3+3");
    history.as_array_mut().unwrap().push(message);
    history
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "user", "content": "and 4+4?"}));
    assert_eq!(chat(&gw, CLAUDE, history).status, 200);
    let sent = mocks[1].last_body();
    assert_eq!(sent["messages"][1]["content"][0], block);

    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": CLAUDE, "stream": true, "messages": user("Think step by step about 3+3")}),
    );
    let streamed: Vec<Value> = s
        .events()
        .into_iter()
        .filter_map(|(_, _, d)| serde_json::from_str(&d).ok())
        .collect();
    let whole = streamed
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["thinking_blocks"].get(0).cloned())
        .expect("a thinking block in the stream");
    assert!(whole["signature"].as_str().is_some_and(|s| !s.is_empty()), "{whole}");
    let thought: String = streamed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(whole["thinking"].as_str(), Some(thought.as_str()));
}

#[test]
fn gemini_function_calls_get_unique_ids_that_tool_results_find_again() {
    let (mocks, gw) = setup("");
    let tools = json!([{"type": "function", "function": {"name": "helloWorld",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false}}}]);
    let ask = || {
        gw.post(
            "/v1/chat/completions",
            &[],
            &json!({"model": GEMINI, "messages": user("greet Alice"), "tools": tools}),
        )
        .json()
    };
    let (a, b) = (ask(), ask());
    let call = a["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(a["choices"][0]["finish_reason"], "tool_calls");
    let id = call["id"].as_str().unwrap();
    assert!(id.starts_with("call_"), "{call}");
    assert_ne!(id, b["choices"][0]["message"]["tool_calls"][0]["id"]);
    // Gemini's schema dialect has no additionalProperties.
    assert!(
        mocks[2].last_body()["tools"][0]["functionDeclarations"][0]["parameters"]
            .get("additionalProperties")
            .is_none()
    );
    let signature = call["extra_content"]["google"]["thought_signature"].clone();
    assert!(
        signature.is_string(),
        "the fixture's thoughtSignature rides along: {call}"
    );

    let mut history = user("greet Alice");
    let h = history.as_array_mut().unwrap();
    h.push(a["choices"][0]["message"].clone());
    h.push(json!({"role": "tool", "tool_call_id": id, "content": "{\"greeting\": \"Hello, Alice!\"}"}));
    let r = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": GEMINI, "messages": history, "tools": tools}),
    );
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Hello, Alice!");
    let sent = mocks[2].last_body();
    assert_eq!(sent["contents"][1]["parts"][0]["thoughtSignature"], signature);
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "helloWorld", "response": {"greeting": "Hello, Alice!"}})
    );
    // A tool result answering no call is refused before anything goes upstream.
    let orphan =
        json!([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]);
    chat(&gw, GEMINI, orphan).expect_error(400, "invalid_request_error");

    let safety = chat(&gw, GEMINI, user("trigger-safety")).json();
    assert_eq!(safety["choices"][0]["finish_reason"], "content_filter");
}

#[test]
fn gemini_embeddings_arrive_in_openais_shape_as_floats_or_base64() {
    let (mocks, gw) = setup("");
    let embed = |input: Value, format: &str| {
        gw.post(
            "/v1/embeddings",
            &[],
            &json!({"model": "gemini/gemini-embedding-001", "input": input, "encoding_format": format}),
        )
    };
    let one = embed(json!("The quick brown fox"), "float").json();
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "gemini/gemini-embedding-001");
    let floats = one["data"][0]["embedding"].as_array().unwrap().clone();
    assert_eq!(floats.len(), 8);
    assert!(mocks[2].requests().last().unwrap()["path"]
        .as_str()
        .unwrap()
        .ends_with(":embedContent"));
    let batch = embed(json!(["The quick brown fox", "jumps over the lazy dog"]), "base64").json();
    assert_eq!(batch["data"].as_array().unwrap().len(), 2);
    assert_eq!(batch["data"][1]["index"], 1);
    let sent = mocks[2].last_body();
    assert_eq!(sent["requests"][0]["model"], "models/gemini-embedding-001");
    let encoded = batch["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(encoded.len() % 4, 0);
    assert!(!encoded.is_empty());

    gw.post("/v1/embeddings", &[], &json!({"model": CLAUDE, "input": "x"}))
        .expect_error(400, "invalid_request_error");
    gw.post("/v1/embeddings", &[], &json!({"model": GEMINI, "input": [[1, 2, 3]]}))
        .expect_error(400, "invalid_request_error");
}

#[test]
fn responses_over_a_chat_only_provider_refuse_what_needs_openai() {
    let (_mocks, gw) = setup("");
    let e = gw
        .post(
            "/v1/responses",
            &[],
            &json!({"model": CLAUDE, "input": "hi", "previous_response_id": "resp_1"}),
        )
        .expect_error(400, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("x-thread-id"), "{e}");
    gw.post(
        "/v1/responses",
        &[],
        &json!({"model": GEMINI, "input": "hi", "tools": [{"type": "web_search"}]}),
    )
    .expect_error(400, "invalid_request_error");
    // max_output_tokens and instructions reach Gemini as generationConfig and systemInstruction.
    let r = gw.post(
        "/v1/responses",
        &[],
        &json!({"model": GEMINI, "input": "Count from 1 to 5", "instructions": "Be terse.", "max_output_tokens": 33}),
    );
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "1, 2, 3, 4, 5");
}

#[test]
fn a_replay_provider_answers_every_api_with_no_upstream_at_all() {
    let gw =
        Gateway::start("[providers.local]\nkind = \"replay\"\ndir = \"fixtures/openai\"\nmodels = [\"gpt-4o-mini\"]\n");
    let r = chat(&gw, "local/gpt-4o-mini", user("Count from 1 to 5"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "1, 2, 3, 4, 5");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "local/gpt-4o-mini", "stream": true, "messages": user("Count from 1 to 5")}),
    );
    let text: String = s
        .events()
        .into_iter()
        .filter_map(|(_, _, d)| serde_json::from_str::<Value>(&d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "1, 2, 3, 4, 5");
    let r = gw.post(
        "/v1/responses",
        &[],
        &json!({"model": "local/gpt-5.4-mini", "input": "What is 3+3?"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.post(
        "/v1/embeddings",
        &[],
        &json!({"model": "local/text-embedding-3-small", "input": "The quick brown fox jumps over the lazy dog"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let e = chat(&gw, "local/gpt-4o-mini", user("nothing records this")).expect_error(502, "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("no fixture matches"), "{e}");
    let models = gw.get("/v1/models", &[]).json();
    assert_eq!(models["data"][0]["id"], "local/gpt-4o-mini");

    // A replay dir that does not load stops the gateway at start, naming the provider.
    let dir = temp_dir("replay-missing");
    let out = std::process::Command::new(MEMGATE)
        .args(["serve", "--config"])
        .arg({
            let p = dir.join("memgate.toml");
            std::fs::write(
                &p,
                format!(
                    "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[providers.local]\nkind = \"replay\"\ndir = \"/nonexistent/fixtures\"\n",
                    dir.join("data")
                ),
            )
            .unwrap();
            p
        })
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[providers.local]") && err.contains("/nonexistent/fixtures"),
        "{err}"
    );
}

#[test]
fn memory_works_the_same_whichever_inbound_format_is_used() {
    let (mocks, gw) = setup("");
    let at = [("x-thread-id", "t-formats"), ("x-resource-id", "user-7")];
    let first = gw.post(
        "/v1/messages",
        &at,
        &json!({"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(first.json()["content"][0]["text"], "Hello! How can I help you today?");
    // The next turn comes through the Responses API to another provider: the thread is the same.
    let second = gw.post(
        "/v1/responses",
        &at,
        &json!({"model": GEMINI, "input": "Count from 1 to 5"}),
    );
    assert_eq!(second.status, 200, "{}", second.text());
    let sent = mocks[2].last_body();
    let texts: Vec<&str> = sent["contents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["parts"][0]["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"Hello") && texts.contains(&"Hello! How can I help you today?"),
        "{texts:?}"
    );
    // And a third through chat completions, streamed, to an OpenAI-compatible provider.
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &at,
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": user("Hello")}),
    );
    assert!(s.events().iter().any(|(_, _, d)| d == "[DONE]"));
    let stored = gw.get("/v1/memory/threads/t-formats/messages", &at).json();
    let roles: Vec<&str> = stored["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{stored}"))
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant", "user", "assistant"],
        "{stored}"
    );
}

#[test]
fn translated_streams_reach_the_client_event_by_event() {
    let (_mocks, gw) = setup("");
    let prompt = "memgate-test: slow stream";
    // The fixtures space their events 150 ms apart; each text piece must arrive on its own.
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": CLAUDE, "stream": true, "messages": user(prompt)}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": GEMINI, "stream": true, "messages": user(prompt)}),
        ),
        (
            "/v1/messages",
            json!({"model": GEMINI, "max_tokens": 64, "stream": true, "messages": user(prompt)}),
        ),
        (
            "/v1/responses",
            json!({"model": CLAUDE, "stream": true, "input": prompt}),
        ),
    ];
    for (path, body) in cases {
        let mut s = Stream::open(&gw.addr, path, &[], &body);
        let pieces: Vec<(std::time::Duration, String)> = s
            .events()
            .into_iter()
            .filter_map(|(t, _, d)| {
                let v: Value = serde_json::from_str(&d).ok()?;
                let text = v["choices"][0]["delta"]["content"]
                    .as_str()
                    .or(v["delta"]["text"].as_str())
                    .or(v["delta"]
                        .as_str()
                        .filter(|_| v["type"] == "response.output_text.delta"))?;
                (!text.is_empty()).then(|| (t, text.to_owned()))
            })
            .collect();
        let text: String = pieces.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(text, "1, 2, 3, 4, 5", "{path} {body}");
        assert!(pieces.len() >= 3, "{pieces:?}");
        for pair in pieces.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap >= std::time::Duration::from_millis(100),
                "{path} over {}: pieces bunched, gap {gap:?} in {pieces:?}",
                body["model"]
            );
        }
    }
}

#[test]
fn messages_to_an_anthropic_provider_pass_through_untranslated() {
    let (mocks, gw) = setup("");
    let body = json!({
        "model": CLAUDE, "max_tokens": 1024, "thinking": {"type": "enabled", "budget_tokens": 512},
        "system": [{"type": "text", "text": "Cite sources.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
                "citations": {"enabled": true}},
            {"type": "text", "text": "Count from 1 to 5"}]}],
        "some_future_field": {"x": 1}
    });
    let r = gw.post("/v1/messages", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], CLAUDE);
    let mut expected = body.clone();
    expected["model"] = json!("claude-sonnet-4");
    assert_eq!(mocks[1].last_body(), expected);
    // With memory on, the conversation is assembled and written back as Anthropic turns: the
    // document block and the request's own fields survive.
    let at = [("x-thread-id", "t-native"), ("x-resource-id", "u-native")];
    assert_eq!(gw.post("/v1/messages", &at, &body).status, 200);
    let sent = mocks[1].last_body();
    assert_eq!(sent["messages"][0]["content"][0], body["messages"][0]["content"][0]);
    assert_eq!((&sent["tools"], &sent["thinking"]), (&body["tools"], &body["thinking"]));
    assert_eq!(sent["some_future_field"], json!({"x": 1}));
}

/// The chat requests a mock received, as JSON bodies, oldest first.
fn chat_bodies(mock: &Mock) -> Vec<Value> {
    mock.requests()
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect()
}

/// The text a chat stream carried, and whether it ended with `[DONE]`.
fn streamed_text(gw: &Gateway, body: &Value) -> (String, bool) {
    let mut s = Stream::open(&gw.addr, "/v1/chat/completions", &[], body);
    assert_eq!(s.status, 200);
    let events = s.events();
    let done = events.last().is_some_and(|(_, _, d)| d == "[DONE]");
    let text = events
        .iter()
        .filter_map(|(_, _, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    (text, done)
}

fn mistral_stream() -> Value {
    json!({"model": "mistral/mistral-small-latest", "stream": true,
        "messages": [{"role": "user", "content": "Count from 1 to 5"}]})
}

#[test]
fn a_provider_that_refuses_stream_options_still_streams_and_is_not_asked_again() {
    // Mistral answers a body holding `stream_options` with a 422 `extra_forbidden`.
    let mock = Mock::start("fixtures/mistral");
    let gw = Gateway::start(&provider("mistral", &mock, ""));
    let body = mistral_stream();
    assert_eq!(streamed_text(&gw, &body), ("1, 2, 3, 4, 5".to_owned(), true));
    let sent = chat_bodies(&mock);
    assert_eq!(
        sent.len(),
        2,
        "one refused request, then one without stream_options: {sent:?}"
    );
    assert_eq!(sent[0]["stream_options"], json!({"include_usage": true}));
    assert!(sent[1].get("stream_options").is_none(), "{}", sent[1]);
    assert!(
        gw.log().contains("stream_options"),
        "the lesson is logged:\n{}",
        gw.log()
    );
    // Learnt for the provider: the next stream goes straight without it.
    mock.clear();
    assert_eq!(streamed_text(&gw, &body).0, "1, 2, 3, 4, 5");
    let sent = chat_bodies(&mock);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].get("stream_options").is_none(), "{}", sent[0]);
    // The upstream's own usage (sent unasked) is counted, once both log lines are written.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while gw.log().matches("stream=complete").count() < 2 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let usage = gw.get("/v1/usage?group_by=model", &[]).json();
    assert_eq!(usage["data"][0]["prompt_tokens"], 20, "{usage}");
    // The Messages translation's own usage ask is left out too; its usage is the upstream's.
    mock.clear();
    let mut s = Stream::open(
        &gw.addr,
        "/v1/messages",
        &[],
        &json!({"model": "mistral/mistral-small-latest", "max_tokens": 20, "stream": true,
            "messages": [{"role": "user", "content": "Count from 1 to 5"}]}),
    );
    assert_eq!(s.status, 200);
    let delta = s
        .events()
        .into_iter()
        .find(|(_, e, _)| e.as_deref() == Some("message_delta"))
        .map(|(_, _, d)| serde_json::from_str::<Value>(&d).unwrap())
        .expect("no message_delta");
    assert_eq!(delta["usage"]["output_tokens"], 13, "{delta}");
    let sent = chat_bodies(&mock);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].get("stream_options").is_none(), "{}", sent[0]);
}

#[test]
fn stream_usage_false_never_asks_for_stream_options() {
    let mock = Mock::start("fixtures/mistral");
    let gw = Gateway::start(&provider("mistral", &mock, "stream_usage = false"));
    let body = mistral_stream();
    assert_eq!(streamed_text(&gw, &body).0, "1, 2, 3, 4, 5");
    let sent = chat_bodies(&mock);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].get("stream_options").is_none(), "{}", sent[0]);
}

#[test]
fn a_clients_own_stream_options_are_not_dropped_on_a_refusal() {
    let mock = Mock::start("fixtures/mistral");
    let gw = Gateway::start(&provider("mistral", &mock, ""));
    let mut body = mistral_stream();
    body["stream_options"] = json!({"continuous_usage_stats": true});
    let r = gw.post("/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(chat_bodies(&mock).len(), 1);
}

#[test]
fn one_callers_stale_previous_response_id_does_not_switch_responses_to_chat_for_everyone() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!("[auth]\nmode = \"keys\"\n{}", provider("openai", &mock, "")));
    let key = format!("Bearer {}", gw.create_key("alice"));
    let byok = [
        ("x-memory-gateway-authorization", key.as_str()),
        ("authorization", "Bearer sk-user-own"),
    ];
    let stale = json!({"model": "openai/gpt-4o-mini", "input": "Count from 1 to 5",
        "previous_response_id": "resp_stale"});
    let e = gw
        .post("/v1/responses", &byok, &stale)
        .expect_error(404, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("resp_stale"), "{e}");
    // Another caller's Responses request still goes to the upstream's /responses.
    mock.clear();
    let r = gw.post(
        "/v1/responses",
        &[("authorization", key.as_str())],
        &json!({"model": "openai/gpt-4o-mini", "input": "Count from 1 to 5"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let paths: Vec<Value> = mock.requests().iter().map(|r| r["path"].clone()).collect();
    assert_eq!(paths, [json!("/v1/responses")]);
    assert!(!gw.log().contains("has no /responses endpoint"), "{}", gw.log());
}
