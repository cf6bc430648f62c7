//! Memory within a model's context window (issue 18): real `memgate` in front of scripted
//! upstreams. A local server's window is discovered (llama.cpp's `/props`, Ollama's
//! `/api/show`) or configured; a thread whose unobserved history outgrows it still gets
//! answers, with what goes upstream kept within it; and the context memgate builds opens with a
//! user turn whatever the observer cut.

mod common;

use common::*;
use memgate::ir::tokens;
use memgate::ir::Message;
use serde_json::{json, Value};

/// Fixtures recorded from (and shaped like) local model servers; see fixtures/local/README.md.
const WINDOW_FIXTURES: &str = "fixtures/local/ctx-window";
/// The window `/props` reports in [`WINDOW_FIXTURES`].
const WINDOW: u64 = 2048;
/// In the oldest seeded message: the scripted server answers "maximum context length" to a chat
/// request still carrying it, as a real one does to an over-long prompt.
const OLDEST: &str = "MARKER-OLDEST";

fn at(thread: &str, resource: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-thread-id", thread.to_owned()),
        ("x-resource-id", resource.to_owned()),
    ]
}

fn hdrs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn call(gw: &Gateway, method: &str, path: &str, body: &Value) -> Resp {
    let res = request(&gw.addr, method, path, &[], body.to_string().as_bytes());
    assert!(res.status < 300, "{method} {path}: {}", res.text());
    res
}

/// Creates thread `id` of resource `resource` holding `messages`, stored through the Memory API.
fn seed(gw: &Gateway, id: &str, resource: &str, messages: &[Value]) {
    call(
        gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": id, "resourceId": resource}),
    );
    call(
        gw,
        "POST",
        &format!("/v1/memory/threads/{id}/messages"),
        &json!({"messages": messages}),
    );
}

/// A long history of ordinary turns (about 35 tokens each), the oldest carrying [`OLDEST`].
fn long_history(turns: usize) -> Vec<Value> {
    let mut out = vec![
        json!({"role": "user", "content": format!("{OLDEST} My name is Alex and I live in Lisbon.")}),
        json!({"role": "assistant", "content": "Nice to meet you, Alex."}),
    ];
    for i in 0..turns {
        out.push(json!({"role": "user", "content": format!(
            "Here is note number {i} about my week: I walked by the river, read two chapters and cooked dinner."
        )}));
        out.push(
            json!({"role": "assistant", "content": format!("Thanks for note {i}; that sounds like a calm week.")}),
        );
    }
    out
}

/// The messages of an OpenAI-format request body the upstream received, and their estimated
/// tokens (memgate's own estimate, as its budget uses).
fn sent_tokens(body: &Value) -> u64 {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| tokens::message(&serde_json::from_value::<Message>(m.clone()).unwrap()))
        .sum()
}

fn chat_requests(mock: &Mock) -> Vec<Value> {
    mock.requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .map(|r| serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        .collect()
}

fn is_observer(body: &Value) -> bool {
    body.to_string().contains("observer of memgate")
}

fn ask(gw: &Gateway, h: &[(&str, &str)], model: &str, text: &str, stream: bool) -> String {
    let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]});
    if !stream {
        let res = gw.post("/v1/chat/completions", h, &body);
        assert_eq!(res.status, 200, "{}\n{}", res.text(), gw.log());
        return res.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let mut s = Stream::open(&gw.addr, "/v1/chat/completions", h, &body);
    assert_eq!(s.status, 200);
    let events = s.events();
    assert_eq!(events.last().map(|e| e.2.as_str()), Some("[DONE]"), "{events:?}");
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.2).ok())
        .inspect(|c| assert!(c.get("error").is_none(), "the stream failed: {c}"))
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_thread_past_the_window_still_gets_answers_within_it() {
    let mock = Mock::start(WINDOW_FIXTURES);
    let dir = temp_dir("window");
    let config = format!("default_provider = \"local\"\n{}", provider("local", &mock, ""));
    let mut gw = Gateway::start_in(&dir, &config, &[]);
    let history = long_history(30);
    seed(&gw, "long", "alex", &history);
    let h = at("long", "alex");
    // The first turn waits for the observer (far past blockAfter), which fails once; the turn is
    // answered all the same, without the oldest messages, within the window /props reported.
    let answer = ask(&gw, &hdrs(&h), "local/smollm2", "What is my name?", false);
    assert!(!answer.is_empty());
    let answer = ask(&gw, &hdrs(&h), "local/smollm2", "And where do I live?", true);
    assert!(!answer.is_empty());
    let turns: Vec<Value> = chat_requests(&mock).into_iter().filter(|b| !is_observer(b)).collect();
    assert_eq!(turns.len(), 2, "{}", gw.log());
    for body in &turns {
        let used = sent_tokens(body);
        // Room is left for the answer: a fifth of the window when the request sets no max_tokens.
        assert!(
            used <= WINDOW - WINDOW / 5,
            "{used} tokens sent to a {WINDOW}-token window"
        );
        assert!(!body.to_string().contains(OLDEST));
        let first = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] != "system")
            .unwrap();
        assert_eq!(first["role"], "user", "{body}");
    }
    assert!(gw.log().contains("oldest unobserved messages"), "{}", gw.log());
    // Left out, not lost: every message is still stored.
    let stored = gw.get("/v1/memory/threads/long/messages?limit=1000", &[]).json();
    assert_eq!(stored["messages"].as_array().unwrap().len(), history.len() + 4);
    assert_eq!(record(&gw, "long")["observerRuns"], 0);
    // The window was asked once and remembered.
    let props = mock.requests().iter().filter(|r| r["path"] == "/props").count();
    assert_eq!(props, 1);
    // After a restart (the observer's backoff forgotten), the next turn observes the oldest
    // messages, the left-out ones among them, in batches that fit the window.
    gw.terminate();
    let gw = Gateway::start_in(&dir, &config, &[]);
    mock.clear();
    ask(&gw, &hdrs(&h), "local/smollm2", "Thanks!", false);
    let r = wait_record(&gw, "long", "an observer run", |r| {
        r["observerRuns"].as_u64() >= Some(1)
    });
    assert!(r["observedMessages"].as_u64().unwrap() > 0, "{r}");
    let observer = chat_requests(&mock).into_iter().find(is_observer).unwrap();
    assert!(
        observer.to_string().contains(OLDEST),
        "the oldest messages are observed first"
    );
    assert!(sent_tokens(&observer) <= WINDOW, "{} tokens", sent_tokens(&observer));
}

/// Seeds `long_history` on a thread of a gateway in front of `fixtures` as provider `local`,
/// asks one question with `model`, and returns the mock (to see what went upstream) and the
/// gateway.
fn one_turn_past_the_window(fixtures: &str, model: &str, extra: &str) -> (Mock, Gateway) {
    let mock = Mock::start(fixtures);
    let gw = Gateway::start(&provider("local", &mock, extra));
    seed(&gw, "long", "alex", &long_history(30));
    let h = at("long", "alex");
    assert!(!ask(&gw, &hdrs(&h), model, "What is my name?", false).is_empty());
    (mock, gw)
}

#[test]
fn ollamas_window_is_discovered_from_api_show() {
    let (mock, gw) = one_turn_past_the_window("fixtures/local/ctx-ollama", "local/smollm2:135m", "");
    // /props first (llama.cpp), then /api/show, once; num_ctx (2048) under the trained 8192.
    let paths: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&paths[..2], ["/props", "/api/show"], "{paths:?}");
    assert_eq!(paths.iter().filter(|p| p.starts_with("/api/show")).count(), 1);
    assert!(gw.log().contains("context window of 2048 tokens"), "{}", gw.log());
    for body in chat_requests(&mock) {
        assert!(sent_tokens(&body) <= WINDOW, "{} tokens sent", sent_tokens(&body));
    }
}

#[test]
fn a_configured_window_wins_over_discovery() {
    let (mock, _gw) = one_turn_past_the_window(
        WINDOW_FIXTURES,
        "local/smollm2",
        "context_window = 8192\ncontext_windows = { \"smollm2\" = 1024 }",
    );
    assert!(mock.requests().iter().all(|r| r["path"] != "/props"));
    let turn = chat_requests(&mock).into_iter().rfind(|b| !is_observer(b)).unwrap();
    assert!(
        sent_tokens(&turn) <= 1024 - 1024 / 5,
        "{} tokens sent",
        sent_tokens(&turn)
    );
}

#[test]
fn a_message_larger_than_the_window_is_still_observed() {
    let mock = Mock::start(WINDOW_FIXTURES);
    let gw = Gateway::start(&provider("local", &mock, ""));
    // About 3,000 tokens, with a marker in its middle that the scripted server refuses as too
    // long in an observer prompt.
    let half = "I pasted the minutes of our meeting here, line after line of them. ".repeat(90);
    let huge = format!("{half} MARKER-MIDDLE {half}");
    seed(
        &gw,
        "huge",
        "alex",
        &[
            json!({"role": "user", "content": huge}),
            json!({"role": "assistant", "content": "OK."}),
        ],
    );
    let h = at("huge", "alex");
    assert!(!ask(&gw, &hdrs(&h), "local/smollm2", "What did I paste?", false).is_empty());
    let r = wait_record(&gw, "huge", "an observer run", |r| {
        r["observerRuns"].as_u64() >= Some(1)
    });
    assert!(r["observedMessages"].as_u64().unwrap() >= 1, "{r}");
    let observer = chat_requests(&mock).into_iter().find(is_observer).unwrap();
    assert!(sent_tokens(&observer) <= WINDOW, "{} tokens", sent_tokens(&observer));
    assert!(observer.to_string().contains("characters left out"));
    // Stored whole all the same.
    let stored = gw.get("/v1/memory/threads/huge/messages", &[]).json();
    assert_eq!(stored["messages"][0]["content"], huge);
}

/// Providers `openai` (fixtures/memory, which also observes), `anthropic` and `gemini` (their
/// recorded catch-all answers), memory observing with `openai/gpt-4o-mini`.
fn three_vendors() -> (Vec<Mock>, Gateway) {
    let mocks: Vec<Mock> = ["fixtures/memory", "fixtures/anthropic", "fixtures/gemini"]
        .into_iter()
        .map(Mock::start)
        .collect();
    let gw = Gateway::start(&format!(
        "[memory]\nobserver_model = \"openai/gpt-4o-mini\"\n{}[providers.anthropic]\nkind = \"anthropic\"\n\
         base_url = \"{}\"\napi_key = \"sk-ant-x\"\n[providers.gemini]\nkind = \"gemini\"\nbase_url = \"{}\"\n\
         api_key = \"g-x\"\n",
        provider("openai", &mocks[0], ""),
        mocks[1].url,
        mocks[2].url
    ));
    (mocks, gw)
}

#[test]
fn after_an_observer_cut_mid_exchange_the_context_opens_with_a_user_turn() {
    let (mocks, gw) = three_vendors();
    let cases = [
        ("openai/gpt-4o-mini", 0, "/messages"),
        ("anthropic/claude-sonnet-4", 1, "/messages"),
        ("gemini/gemini-2.5-flash", 2, "/contents"),
    ];
    for (model, m, list) in cases {
        let id = format!("cut-{m}");
        call(
            &gw,
            "POST",
            "/v1/memory/threads",
            &json!({"id": id, "resourceId": "alex"}),
        );
        call(
            &gw,
            "PATCH",
            &format!("/v1/memory/threads/{id}/observations/config"),
            &json!({"messageTokens": 30}),
        );
        // The observer keeps a raw tail of a fifth of 30 tokens: the last answer alone, so
        // the unobserved messages open with the assistant.
        call(
            &gw,
            "POST",
            &format!("/v1/memory/threads/{id}/messages"),
            &json!({"messages": [
                {"role": "user", "content": "My name is Alex and I prefer concise answers."},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": "Please remember that my favourite colour is green and that I cycle to work every single day."},
                {"role": "assistant", "content": "OK."},
            ]}),
        );
        wait_record(&gw, &id, "an observer run", |r| r["observerRuns"] == 1);
        let h = at(&id, "alex");
        let res = gw.post(
            "/v1/chat/completions",
            &hdrs(&h),
            &json!({"model": model, "messages": [{"role": "user", "content": "What is my name?"}]}),
        );
        assert_eq!(res.status, 200, "{model}: {}", res.text());
        let sent = mocks[m].last_body();
        let turns = sent.pointer(list).and_then(Value::as_array).unwrap();
        let first = turns.iter().find(|t| t["role"] != "system").unwrap();
        assert_eq!(first["role"], "user", "{model}: {sent}");
        // The observed start is in memory; the raw answer that followed it is still sent.
        assert!(sent.to_string().contains("OK."), "{model}: {sent}");
    }
}

#[test]
fn resource_scope_shows_the_other_threads_recent_messages() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n[memory]\nscope = \"resource\"\n{}",
        provider("openai", &mock, "")
    ));
    let say = |thread: &str, resource: &str, text: &str| {
        ask(&gw, &hdrs(&at(thread, resource)), "openai/gpt-4o-mini", text, false)
    };
    say("first", "alex", "My name is Alex and I prefer concise answers.");
    for i in 0..12 {
        say(
            "busy",
            "alex",
            &format!("Filler number {i} about nothing in particular"),
        );
    }
    // Nothing observed yet, yet another thread of the resource knows.
    assert_eq!(say("second", "alex", "What is my name?"), "Your name is Alex.");
    let sent = mock.last_body().to_string();
    assert!(sent.contains("<thread id=\\\"first\\\">"), "{sent}");
    // Bounded: the busy thread shows its newest messages only.
    assert!(
        sent.contains("Filler number 11") && !sent.contains("Filler number 2 "),
        "{sent}"
    );
    // Another resource sees none of it.
    assert_eq!(say("third", "sam", "What is my name?"), "I don't know your name yet.");
}

#[test]
fn a_window_is_learnt_from_the_servers_context_length_error() {
    // llama-cpp-python tells its window nowhere but in this error (no /props, no /api/show).
    let mock = Mock::start("fixtures/local/ctx-learn");
    let gw = Gateway::start(&provider("local", &mock, ""));
    seed(&gw, "long", "alex", &long_history(70));
    let h = at("long", "alex");
    let body = json!({"model": "local/smollm2", "messages": [{"role": "user", "content": "What is my name?"}]});
    let first = gw.post("/v1/chat/completions", &hdrs(&h), &body);
    assert_eq!(
        first.expect_error(400, "invalid_request_error")["code"],
        "context_length_exceeded"
    );
    // The answer named the window (4096): from the next turn on, the context fits it.
    assert!(!ask(&gw, &hdrs(&h), "local/smollm2", "What is my name?", false).is_empty());
    let turn = chat_requests(&mock).into_iter().rfind(|b| !is_observer(b)).unwrap();
    assert!(
        sent_tokens(&turn) <= 4096 - 4096 / 5,
        "{} tokens sent",
        sent_tokens(&turn)
    );
    assert!(gw.log().contains("context window is 4096 tokens"), "{}", gw.log());
}

/// Writes one exchange of the `memgate-mock` fixture format into `dir`: `meta` and an
/// OpenAI chat completion answering `text`, in llama-cpp-python's JSON shape.
fn scripted(dir: &std::path::Path, name: &str, meta: Value, text: &str) {
    let case = dir.join(name);
    std::fs::create_dir_all(&case).unwrap();
    std::fs::write(case.join("meta.json"), meta.to_string()).unwrap();
    let answer = json!({
        "id": format!("chatcmpl-scripted-{name}"), "object": "chat.completion", "created": 1796324400,
        "model": "smollm2", "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
        "finish_reason": "stop"}], "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    });
    std::fs::write(case.join("response.json"), answer.to_string()).unwrap();
}

fn chat_fixture(markers: &[&str], absent: &[&str]) -> Value {
    json!({"path": "/v1/chat/completions", "match": markers, "absent": absent, "content_type": "application/json"})
}

/// Observation lines about the notes of [`long_history`], `n` of them from `first`.
fn note_lines(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("* 🟡 (10:{:02}) User's note {i} mentions day {i}.\n", i % 60))
        .collect()
}

#[test]
fn observations_past_the_window_are_cut_to_fit_it_everywhere() {
    let fixtures = temp_dir("grown-fixtures");
    // About 2,800 tokens of observations: more than a 2,048-token window holds.
    let big = format!(
        "<observations>\nDate: Dec 1, 2026\n{}</observations>",
        note_lines(0, 180)
    );
    scripted(
        &fixtures,
        "010_observer_big",
        chat_fixture(&["observer of memgate", "PHASE-ONE"], &[]),
        &big,
    );
    scripted(
        &fixtures,
        "020_observer",
        chat_fixture(&["observer of memgate"], &[]),
        "<observations>\nDate: Dec 2, 2026\n* 🔴 (09:00) User asked what they wrote in phase two.\n</observations>",
    );
    let condensed = format!(
        "<observations>\nDate: Dec 1, 2026\n{}</observations>",
        note_lines(500, 24)
    );
    scripted(
        &fixtures,
        "030_reflector",
        chat_fixture(&["reflector of memgate"], &[]),
        &condensed,
    );
    scripted(
        &fixtures,
        "040_chat",
        chat_fixture(&["\"messages\""], &[]),
        "You wrote notes about your week.",
    );
    let mock = Mock::start(fixtures.to_str().unwrap());
    let dir = temp_dir("grown");
    // Grown with a large window (and no reflection)…
    let large = format!(
        "default_provider = \"local\"\n[memory]\nmessage_tokens = 3000\nobservation_tokens = 100000\n{}",
        provider("local", &mock, "context_window = 100000")
    );
    let mut gw = Gateway::start_in(&dir, &large, &[]);
    let mut history = long_history(80);
    history[0]["content"] = json!("PHASE-ONE My name is Alex and I live in Lisbon.");
    seed(&gw, "grown", "alex", &history);
    let h = at("grown", "alex");
    ask(&gw, &hdrs(&h), "local/smollm2", "Hello again.", false);
    let r = wait_record(&gw, "grown", "the big observation", |r| {
        r["observationTokenCount"].as_u64() > Some(WINDOW)
    });
    assert_eq!(r["generationCount"], 0, "{r}");
    gw.terminate();
    // …then served by a model whose window is 2,048 tokens.
    mock.clear();
    let small = format!(
        "default_provider = \"local\"\n{}",
        provider("local", &mock, &format!("context_window = {WINDOW}"))
    );
    let gw = Gateway::start_in(&dir, &small, &[]);
    for i in 0..12 {
        ask(
            &gw,
            &hdrs(&h),
            "local/smollm2",
            &format!("PHASE-TWO question {i}: what did I write?"),
            false,
        );
    }
    let r = wait_record(&gw, "grown", "a reflection", |r| {
        r["generationCount"].as_u64() >= Some(1)
    });
    let text = gw.get("/v1/memory/threads/grown/observations", &[]).json().to_string();
    // The oldest part was condensed, the newest lines kept as they were.
    assert!(text.contains("note 500"), "{text}");
    assert!(text.contains("note 179"), "{text}");
    assert!(!text.contains("note 0 "), "{text}");
    assert!(r["observationTokenCount"].as_u64().unwrap() < 2800, "{r}");
    let sent = chat_requests(&mock);
    assert!(sent.iter().any(|b| b.to_string().contains("reflector of memgate")));
    for body in &sent {
        let used = sent_tokens(body);
        if is_observer(body) || body.to_string().contains("reflector of memgate") {
            let answer = body["max_tokens"].as_u64().unwrap();
            assert!(
                used + answer <= WINDOW,
                "a memory call of {used} tokens + {answer} for the answer"
            );
        } else {
            assert!(
                used <= WINDOW - WINDOW / 5,
                "{used} tokens sent to a {WINDOW}-token window"
            );
            assert!(
                body.to_string().contains("note 179"),
                "the newest observations are shown"
            );
        }
    }
}

/// Writes a streamed answer of `text` (word by word, `gap_ms` apart) in llama-cpp-python's
/// chunk shape into `dir`, matched by `markers`.
fn scripted_stream(dir: &std::path::Path, name: &str, markers: &[&str], text: &str, gap_ms: u64) {
    let case = dir.join(name);
    std::fs::create_dir_all(&case).unwrap();
    let meta = json!({"path": "/v1/chat/completions", "match": markers, "event_delay_ms": gap_ms,
        "content_type": "text/event-stream; charset=utf-8"});
    std::fs::write(case.join("meta.json"), meta.to_string()).unwrap();
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-scripted", "model": "smollm2", "created": 1796324413,
            "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut sse = chunk(json!({"role": "assistant"}), Value::Null);
    for word in text.split_inclusive(' ') {
        sse.push_str(&chunk(json!({"content": word}), Value::Null));
    }
    sse.push_str(&chunk(json!({}), json!("stop")));
    sse.push_str("data: [DONE]\n\n");
    std::fs::write(case.join("response.sse"), sse).unwrap();
}

/// The mock's record of the first request whose body holds `marker`.
fn seen_with(mock: &Mock, marker: &str) -> Option<Value> {
    mock.requests()
        .into_iter()
        .find(|r| r["body"].as_str().unwrap_or_default().contains(marker))
}

/// A gateway whose provider `local` is a one-slot mock (as llama-cpp-python serves) with
/// `slots = 1`, memory observing through it with `message_tokens = 300` and the `[memory]`
/// lines `memory`; the observer's answer `observation` is streamed `gap_ms` per word.
fn single_slot(name: &str, observation: &str, gap_ms: u64, memory: &str) -> (Mock, Gateway) {
    let fixtures = temp_dir(&format!("{name}-fixtures"));
    scripted_stream(
        &fixtures,
        "010_observer",
        &["observer of memgate", "\"stream\":true"],
        observation,
        gap_ms,
    );
    scripted(
        &fixtures,
        "020_chat",
        chat_fixture(&["\"messages\""], &["observer of memgate"]),
        "Hello!",
    );
    let mock = Mock::start_with(fixtures.to_str().unwrap(), &["--slots", "1"]);
    let gw = Gateway::start(&format!(
        "default_provider = \"local\"\n[memory]\nobserver_model = \"local/smollm2\"\nmessage_tokens = 300\n\
         buffer_tokens = 0\n{memory}{}",
        provider("local", &mock, "context_window = 8192\nslots = 1")
    ));
    (mock, gw)
}

#[test]
fn on_a_single_slot_server_a_memory_call_gives_way_to_a_clients_request() {
    // An observer answer streamed over about 4 s, as a small CPU model generates it.
    let observation = "<observations>\nDate: Dec 3, 2026\n* 🔴 (10:00) User is called Alex and lives in Lisbon.\n* 🟡 (10:01) User keeps a journal of walks by the river and chapters read.\n</observations>";
    let (mock, gw) = single_slot("slots", observation, 150, "give_way_ms = 200\nquiet_ms = 300\n");
    seed(&gw, "alex", "alex", &long_history(12));
    // The observer run started by the seeded messages streams its call…
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let observer = loop {
        if let Some(r) = seen_with(&mock, "observer of memgate") {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no observer call\n{}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        observer["body"].as_str().unwrap().contains("\"stream\":true"),
        "{observer}"
    );
    // A model list takes no generation slot: the call goes on.
    gw.get("/v1/models", &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!gw.log().contains("gave way"), "{}", gw.log());
    // …and a client's request to the same server takes its slot: the call hangs up.
    let res = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "local/smollm2", "messages": [{"role": "user", "content": "Hi there"}]}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let abandoned = || seen_with(&mock, "observer of memgate").unwrap()["stream"] == "abandoned";
    while !abandoned() {
        assert!(
            std::time::Instant::now() < deadline,
            "the observer call was not abandoned\n{}",
            gw.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gw.log().contains("gave way"), "{}", gw.log());
    // Giving way is not a failure: nothing counted, no backoff; the next turn observes, and
    // with the server free the streamed answer is read to its end and stored.
    let r = record(&gw, "alex");
    assert_eq!(
        (r["failures"].as_u64(), r["observerRuns"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    ask(
        &gw,
        &hdrs(&at("alex", "alex")),
        "local/smollm2",
        "What is my name?",
        false,
    );
    // That turn is past blockAfter, but the run it would wait for is the one its own request
    // made give way: it does not wait.
    assert!(!gw.log().contains("observing before forwarding"), "{}", gw.log());
    wait_record(&gw, "alex", "an observer run", |r| {
        r["observerRuns"].as_u64() >= Some(1)
    });
    let text = gw.get("/v1/memory/threads/alex/observations", &[]).json().to_string();
    assert!(text.contains("User is called Alex and lives in Lisbon."), "{text}");
}

/// A streamed memory call to a server that sends no usage in streams (llama-cpp-python
/// 0.3.36, fixtures/local/prov-030) must still be accounted (estimated), as a client's stream is
/// and as the same call non-streamed was before `slots`.
#[test]
fn a_streamed_memory_call_without_upstream_usage_is_still_accounted() {
    let observation =
        "<observations>\nDate: Dec 3, 2026\n* 🔴 (10:00) User is called Alex and lives in Lisbon.\n</observations>";
    let (_mock, gw) = single_slot("slots-usage", observation, 0, "");
    seed(&gw, "alex", "alex", &long_history(12));
    let r = wait_record(&gw, "alex", "an observer run", |r| {
        r["observerRuns"].as_u64() >= Some(1)
    });
    assert!(
        r["memoryUsage"]["total_tokens"].as_u64().unwrap() > 0,
        "the observer read ~600 tokens and wrote ~30, yet its usage is {}",
        r["memoryUsage"]
    );
}
