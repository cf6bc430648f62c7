//! Observational memory end to end: real `memgate` in front of the scripted upstream in
//! fixtures/memory, which answers only from the context it receives ("What is my name?" →
//! the last "name is X" anywhere in its input), so what the gateway remembers is what it sent.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const INTRO: &str = "My name is Alex and I prefer concise answers.";
const QUESTION: &str = "What is my name?";

fn gateway(mock: &Mock, memory: &str) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"openai\"\n[memory]\n{memory}\n{}",
        provider("openai", mock, "")
    ))
}

fn at(thread: &str, resource: &str) -> [(&'static str, String); 2] {
    [
        ("x-thread-id", thread.to_owned()),
        ("x-resource-id", resource.to_owned()),
    ]
}

fn hdrs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    h.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// One non-streamed chat turn with memory headers (and any others), sending only `text`.
fn say(gw: &Gateway, headers: &[(&str, &str)], text: &str) -> Resp {
    gw.post(
        "/v1/chat/completions",
        headers,
        &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}),
    )
}

fn answer(res: &Resp) -> String {
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn messages(gw: &Gateway, thread: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    let res = gw.get(&format!("/v1/memory/threads/{thread}/messages?limit=1000"), headers);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["messages"].as_array().unwrap().clone()
}

#[test]
fn the_seed_example_remembers_the_name_from_only_the_new_message() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let h = at("my-thread-1", "user-42");
    assert!(answer(&say(&gw, &hdrs(&h), INTRO)).starts_with("Nice to meet you"));
    assert_eq!(answer(&say(&gw, &hdrs(&h), QUESTION)), "Your name is Alex.");
    // What went upstream: the stored exchange, then the new question.
    let sent: Value = serde_json::from_str(mock.last_body()["messages"].to_string().as_str()).unwrap();
    let roles: Vec<&str> = sent
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent[0]["content"], INTRO);
    // Stored in order, with ids and times, Mastra's field names.
    let stored = messages(&gw, "my-thread-1", &[]);
    let texts: Vec<&str> = stored.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            INTRO,
            "Nice to meet you! I'll keep answers short.",
            QUESTION,
            "Your name is Alex."
        ]
    );
    for m in &stored {
        assert_eq!(m["threadId"], "my-thread-1");
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        assert!(m["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    // Without the headers: a plain proxy that remembers nothing and stores nothing.
    assert_eq!(answer(&say(&gw, &[], QUESTION)), "I don't know your name yet.");
    assert_eq!(gw.get("/v1/memory/threads", &[]).json()["total"], 1);
    assert_eq!(messages(&gw, "my-thread-1", &[]).len(), 4);
}

#[test]
fn streaming_with_memory_stores_the_answer_before_the_stream_ends() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let h = at("stream-thread", "user-7");
    let stream = |text: &str| {
        let mut s = Stream::open(
            &gw.addr,
            "/v1/chat/completions",
            &hdrs(&h),
            &json!({"model": "openai/gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": text}]}),
        );
        let events = s.events();
        assert_eq!(events.last().unwrap().2, "[DONE]");
        events
            .iter()
            .filter(|e| e.2 != "[DONE]")
            .filter_map(|e| serde_json::from_str::<Value>(&e.2).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect::<String>()
    };
    assert!(stream(INTRO).starts_with("Nice to meet you"));
    assert_eq!(stream(QUESTION), "Your name is Alex.");
    // Read right after [DONE]: already committed.
    let stored = messages(&gw, "stream-thread", &[]);
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[3]["content"], "Your name is Alex.");
    assert!(stored.iter().all(|m| m.get("incomplete").is_none()));
}

#[test]
fn an_interrupted_stream_stores_the_question_and_the_partial_answer_marked_incomplete() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let h = at("cut", "user-1");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &hdrs(&h),
        &json!({"model": "openai/gpt-4o-mini", "stream": true,
                "messages": [{"role": "user", "content": "memgate-test: truncated"}]}),
    );
    let events = s.events();
    assert!(events.iter().all(|e| e.2 != "[DONE]"));
    let stored = messages(&gw, "cut", &[]);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0]["content"], "memgate-test: truncated");
    assert_eq!(stored[1]["role"], "assistant");
    assert_eq!(stored[1]["incomplete"], true);
    assert!(!stored[1]["content"].as_str().unwrap().is_empty());
}

#[test]
fn memory_headers_are_checked() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    say(&gw, &[("x-thread-id", "t")], QUESTION).expect_error(400, "invalid_request_error");
    say(&gw, &[("x-resource-id", "r")], QUESTION).expect_error(400, "invalid_request_error");
    let long = "x".repeat(300);
    say(&gw, &[("x-thread-id", &long), ("x-resource-id", "r")], QUESTION).expect_error(400, "invalid_request_error");
    assert!(mock.requests().is_empty(), "nothing reached the upstream");
    assert_eq!(gw.get("/v1/memory/threads", &[]).json()["total"], 0);
}

#[test]
fn threads_are_isolated_by_thread_resource_and_tenant() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n[auth]\nmode = \"keys\"\n{}",
        provider("openai", &mock, "")
    ));
    let key = |name: &str| {
        String::from_utf8(gw.cli(&["keys", "create", name]).stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let (a, b) = (format!("Bearer {}", key("team-a")), format!("Bearer {}", key("team-b")));
    let with = |auth: &str, thread: &str, resource: &str| {
        vec![
            ("authorization", auth.to_owned()),
            ("x-thread-id", thread.to_owned()),
            ("x-resource-id", resource.to_owned()),
        ]
    };
    answer(&say(&gw, &hdrs(&with(&a, "t1", "alex")), INTRO));
    // Another thread of the same resource: thread scope keeps them apart.
    assert_eq!(
        answer(&say(&gw, &hdrs(&with(&a, "t2", "alex")), QUESTION)),
        "I don't know your name yet."
    );
    // The same thread id under another resource: not found. Another tenant's t1 is not
    // visible to B (tests/tenancy.rs: B's own t1 is another thread).
    say(&gw, &hdrs(&with(&a, "t1", "someone-else")), QUESTION).expect_error(404, "invalid_request_error");
    let b_only = [("authorization", b.as_str())];
    gw.get("/v1/memory/threads/t1", &b_only)
        .expect_error(404, "invalid_request_error");
    gw.get("/v1/memory/threads/t1/messages", &b_only)
        .expect_error(404, "invalid_request_error");
    assert_eq!(gw.get("/v1/memory/threads", &b_only).json()["total"], 0);
    let listed = gw.get("/v1/memory/threads", &[("authorization", a.as_str())]).json();
    assert_eq!(listed["total"], 2);
    // Erasing the resource as tenant B touches nothing of tenant A.
    let erase = request(&gw.addr, "DELETE", "/v1/memory/resources/alex", &b_only, b"");
    assert_eq!(erase.json()["threads"], 0);
    assert_eq!(
        answer(&say(&gw, &hdrs(&with(&a, "t1", "alex")), QUESTION)),
        "Your name is Alex."
    );
}

#[test]
fn the_observer_replaces_old_messages_with_observations() {
    let mock = Mock::start("fixtures/memory");
    // Unbuffered: one run when the threshold is passed (tests/memory_local.rs buffers).
    let gw = gateway(&mock, "message_tokens = 60\nbuffer_tokens = 0");
    let h = at("long", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    for i in 0..3 {
        answer(&say(&gw, &hdrs(&h), &format!("Tell me something nice, number {i}")));
    }
    let r = wait_record(&gw, "long", "an observer run", |r| r["observerRuns"] == 1);
    // The oldest turns were observed; what stays raw is under the threshold.
    assert!(r["observedMessages"].as_u64().unwrap() >= 4, "{r}");
    assert!(r["pendingMessageTokens"].as_u64().unwrap() < 60, "{r}");
    // The observer was asked with our instructions and a dated, timed transcript.
    let observer = mock
        .requests()
        .into_iter()
        .find(|r| r["body"].as_str().unwrap().contains("observer of memgate"))
        .unwrap();
    let body: Value = serde_json::from_str(observer["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["messages"][0]["role"], "system");
    let transcript = body["messages"][1]["content"].as_str().unwrap();
    assert!(transcript.contains(&format!("): {INTRO}")), "{transcript}");
    let obs = gw.get("/v1/memory/threads/long/observations", &[]).json();
    let lines = obs["lines"].as_array().unwrap();
    assert_eq!(lines[0]["priority"], "high");
    assert_eq!(lines[0]["text"], "User stated their name is Alex.");
    assert!(lines[0]["date"].as_str().unwrap().contains(", 20"), "{obs}");
    assert_eq!(
        obs["currentTask"],
        "Primary: answer the user's questions about themselves"
    );
    // The next request carries the observations, not the observed raw messages.
    mock.clear();
    assert_eq!(answer(&say(&gw, &hdrs(&h), QUESTION)), "Your name is Alex.");
    let sent = mock.last_body();
    let first = sent["messages"][0]["content"].as_str().unwrap();
    assert!(
        first.starts_with("The following observations block contains your memory"),
        "{first}"
    );
    assert!(first.contains("* 🔴 (14:30) User stated their name is Alex."));
    assert!(first.contains("<current-task>"));
    assert!(
        !sent.to_string().contains(INTRO),
        "observed messages left the context: {sent}"
    );
    // Observed messages are still stored word for word.
    assert_eq!(messages(&gw, "long", &[]).len(), 10);
    assert!(r["memoryUsage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn reflection_condenses_observations_into_a_new_generation() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "message_tokens = 40\nobservation_tokens = 10");
    let h = at("reflect", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    answer(&say(&gw, &hdrs(&h), "Tell me something nice"));
    let r = wait_record(&gw, "reflect", "a reflection", |r| r["reflectorRuns"] == 1);
    assert_eq!(r["generationCount"], 1);
    // The scripted reflection stays over 10 tokens, so every rung of the ladder was tried.
    let asks: Vec<String> = mock
        .requests()
        .into_iter()
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .filter(|b| b.contains("reflector of memgate"))
        .collect();
    assert_eq!(asks.len(), 3);
    assert!(asks[0].contains("## COMPRESSION REQUIRED") && asks[2].contains("## CRITICAL COMPRESSION REQUIRED"));
    let obs = gw.get("/v1/memory/threads/reflect/observations", &[]).json();
    assert!(obs["observations"]
        .as_str()
        .unwrap()
        .contains("User's name is Alex; prefers concise answers."));
    let history = gw.get("/v1/memory/threads/reflect/observations/history", &[]).json();
    let gens = history["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{history}");
    assert_eq!(gens[0]["generation"], 0);
    assert!(gens[0]["observations"]
        .as_str()
        .unwrap()
        .contains("User stated their name is Alex."));
    assert_eq!(gens[1]["replacedAt"], Value::Null);
    assert_eq!(answer(&say(&gw, &hdrs(&h), QUESTION)), "Your name is Alex.");
}

#[test]
fn resource_scope_shares_observations_across_threads() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "message_tokens = 40\nscope = \"resource\"");
    answer(&say(&gw, &hdrs(&at("first", "alex")), INTRO));
    answer(&say(&gw, &hdrs(&at("first", "alex")), "Tell me something nice"));
    wait_record(&gw, "first", "an observer run", |r| r["observerRuns"] == 1);
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("second", "alex")), QUESTION)),
        "Your name is Alex."
    );
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("third", "sam")), QUESTION)),
        "I don't know your name yet."
    );
    assert_eq!(record(&gw, "second")["scope"], "resource");
    // Erasing the resource takes its shared observations too, even once its threads are gone.
    call(&gw, "DELETE", "/v1/memory/threads/first", &Value::Null);
    call(&gw, "DELETE", "/v1/memory/threads/second", &Value::Null);
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("fourth", "alex")), QUESTION)),
        "Your name is Alex."
    );
    assert_eq!(
        call(&gw, "DELETE", "/v1/memory/resources/alex", &Value::Null).json()["threads"],
        1
    );
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("fifth", "alex")), QUESTION)),
        "I don't know your name yet."
    );
}

#[test]
fn a_client_resending_its_history_is_not_duplicated() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let h = at("full", "alex");
    let first = answer(&say(&gw, &hdrs(&h), INTRO));
    let history = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": INTRO}]},
        {"role": "assistant", "content": first},
        {"role": "user", "content": QUESTION}
    ]);
    let res = gw.post(
        "/v1/chat/completions",
        &hdrs(&h),
        &json!({"model": "openai/gpt-4o-mini", "messages": history}),
    );
    assert_eq!(answer(&res), "Your name is Alex.");
    let sent = mock.last_body().to_string();
    assert_eq!(sent.matches(INTRO).count(), 1, "{sent}");
    assert!(
        sent.starts_with(r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."}"#),
        "{sent}"
    );
    let stored = messages(&gw, "full", &[]);
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|m| m["role"] != "system"));
}

#[test]
fn concurrent_requests_on_one_thread_lose_nothing() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let (clients, each) = (8, 6);
    std::thread::scope(|s| {
        for c in 0..clients {
            let gw = &gw;
            s.spawn(move || {
                for i in 0..each {
                    answer(&say(gw, &hdrs(&at("busy", "r")), &format!("note {c}-{i}")));
                }
            });
        }
    });
    let stored = messages(&gw, "busy", &[]);
    assert_eq!(stored.len(), clients * each * 2);
    for pair in stored.chunks(2) {
        assert_eq!(pair[0]["role"], "user", "{pair:?}");
        assert_eq!(
            (pair[1]["role"].as_str(), pair[1]["content"].as_str()),
            (Some("assistant"), Some("OK."))
        );
    }
    for c in 0..clients {
        let mine: Vec<String> = stored
            .iter()
            .filter_map(|m| m["content"].as_str())
            .filter(|t| t.starts_with(&format!("note {c}-")))
            .map(str::to_owned)
            .collect();
        // Each client's turns are all there, in the order it sent them.
        assert_eq!(mine, (0..each).map(|i| format!("note {c}-{i}")).collect::<Vec<_>>());
    }
}

#[test]
fn every_acknowledged_exchange_survives_kill_9_and_restart() {
    let mock = Mock::start("fixtures/memory");
    let dir = temp_dir("kill9");
    let config = format!("default_provider = \"openai\"\n{}", provider("openai", &mock, ""));
    let gw = Gateway::start_in(&dir, &config, &[]);
    let acked = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for c in 0..6 {
            let (gw, acked, stop) = (&gw, &acked, &stop);
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let text = format!("entry {c}-{i}");
                    let h = at(&format!("load-{c}"), "r");
                    // A request the kill cuts off is simply not acknowledged.
                    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        say(gw, &hdrs(&h), &text).status == 200
                    }))
                    .unwrap_or(false);
                    if ok {
                        acked.lock().unwrap().push((c, text));
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(700));
        let _ = std::process::Command::new("kill")
            .args(["-9", &gw.pid().to_string()])
            .status();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    drop(gw);
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 20, "the load ran: {} acknowledged", acked.len());
    let gw = Gateway::start_in(&dir, &config, &[]);
    for c in 0..6 {
        let stored: Vec<String> = messages(&gw, &format!("load-{c}"), &[])
            .iter()
            .filter_map(|m| m["content"].as_str().map(str::to_owned))
            .collect();
        for (_, text) in acked.iter().filter(|(who, _)| *who == c) {
            assert!(stored.contains(text), "acknowledged {text:?} was lost");
        }
    }
    // And memory still works on the recovered file.
    answer(&say(&gw, &hdrs(&at("after", "r")), INTRO));
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("after", "r")), QUESTION)),
        "Your name is Alex."
    );
}

#[test]
fn memory_survives_a_clean_restart() {
    let mock = Mock::start("fixtures/memory");
    let dir = temp_dir("restart");
    let config = format!("default_provider = \"openai\"\n{}", provider("openai", &mock, ""));
    let mut gw = Gateway::start_in(&dir, &config, &[]);
    answer(&say(&gw, &hdrs(&at("kept", "alex")), INTRO));
    assert!(gw.terminate().success());
    let gw = Gateway::start_in(&dir, &config, &[]);
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("kept", "alex")), QUESTION)),
        "Your name is Alex."
    );
}

#[test]
fn the_responses_api_reads_and_feeds_the_same_memory() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let h = at("mixed", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    let res = gw.post(
        "/v1/responses",
        &hdrs(&h),
        &json!({"model": "openai/gpt-4o-mini", "instructions": "Be brief.", "input": QUESTION}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.json()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text, "Your name is Alex.");
    let sent = mock.last_body();
    assert_eq!(sent["instructions"], "Be brief.");
    assert_eq!(sent["input"][0]["content"], INTRO);
    assert_eq!(sent["input"][2], json!({"role": "user", "content": QUESTION}));
    // Streamed too; the answer lands in the thread either way.
    let mut s = Stream::open(
        &gw.addr,
        "/v1/responses",
        &hdrs(&h),
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "input": [{"role": "user", "content": QUESTION}]}),
    );
    let events = s.events();
    assert_eq!(events.last().unwrap().1.as_deref(), Some("response.completed"));
    let stored = messages(&gw, "mixed", &[]);
    let texts: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        texts[2..],
        [QUESTION, "Your name is Alex.", QUESTION, "Your name is Alex."]
    );
}

/// A request with a method and a JSON body to the memory API.
fn call(gw: &Gateway, method: &str, path: &str, body: &Value) -> Resp {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request(&gw.addr, method, path, &[("content-type", "application/json")], &bytes)
}

#[test]
fn the_memory_api_manages_threads_and_messages() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "");
    let made = call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "api-1", "resourceId": "u1", "title": "Trip", "metadata": {"k": 1}}),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(made.json()["resourceId"], "u1");
    call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "api-1", "resourceId": "u1"}),
    )
    .expect_error(409, "invalid_request_error");
    call(&gw, "POST", "/v1/memory/threads", &json!({"title": "no resource"}))
        .expect_error(400, "invalid_request_error");
    let generated = call(&gw, "POST", "/v1/memory/threads", &json!({"resourceId": "u2"})).json();
    assert!(generated["id"].as_str().unwrap().starts_with("thread_"));
    // Lists, filtered and paged; ids with reserved characters work percent-encoded.
    call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "a/b c", "resourceId": "u1"}),
    );
    let u1 = gw.get("/v1/memory/threads?resourceId=u1", &[]).json();
    assert_eq!(u1["total"], 2);
    assert_eq!(gw.get("/v1/memory/threads/a%2Fb%20c", &[]).json()["id"], "a/b c");
    let page = gw.get("/v1/memory/threads?limit=1&offset=1", &[]).json();
    assert_eq!(
        (page["total"].as_u64(), page["threads"].as_array().unwrap().len()),
        (Some(3), 1)
    );
    assert_eq!(page["hasMore"], true);
    gw.get("/v1/memory/threads?limit=0", &[])
        .expect_error(400, "invalid_request_error");
    // Rename; metadata replaced.
    let patched = call(
        &gw,
        "PATCH",
        "/v1/memory/threads/api-1",
        &json!({"title": "Japan trip", "metadata": {"k": 2}}),
    )
    .json();
    assert_eq!(
        (patched["title"].as_str(), patched["metadata"]["k"].as_u64()),
        (Some("Japan trip"), Some(2))
    );
    // Messages saved directly, listed both ways, deleted by id.
    let saved = call(
        &gw,
        "POST",
        "/v1/memory/threads/api-1/messages",
        &json!({"messages": [
            {"role": "user", "content": INTRO}, {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Bye"}
        ]}),
    );
    assert_eq!(saved.status, 201, "{}", saved.text());
    let ids: Vec<String> = saved.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let desc = gw
        .get("/v1/memory/threads/api-1/messages?order=desc&limit=2", &[])
        .json();
    assert_eq!(desc["messages"][0]["content"], "Bye");
    assert_eq!(desc["messages"].as_array().unwrap().len(), 2);
    call(
        &gw,
        "POST",
        "/v1/memory/threads/api-1/messages",
        &json!({"messages": [{"role": "robot", "content": "x"}]}),
    )
    .expect_error(400, "invalid_request_error");
    let deleted = call(
        &gw,
        "DELETE",
        "/v1/memory/threads/api-1/messages",
        &json!({"messageIds": [ids[2], "msg_nope"]}),
    );
    assert_eq!(deleted.json()["deleted"], 1);
    assert_eq!(messages(&gw, "api-1", &[]).len(), 2);
    // Saved messages are memory like any other: a chat turn on the thread sees them.
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("api-1", "u1")), QUESTION)),
        "Your name is Alex."
    );
    // Thresholds per thread show in the record.
    let config = call(
        &gw,
        "PATCH",
        "/v1/memory/threads/api-1/observations/config",
        &json!({"messageTokens": 5000}),
    );
    assert_eq!(config.json()["messageTokens"], 5000);
    assert_eq!(
        record(&gw, "api-1")["config"],
        json!({"messageTokens": 5000, "observationTokens": 40000})
    );
    call(
        &gw,
        "PATCH",
        "/v1/memory/threads/api-1/observations/config",
        &json!({"messageTokens": 0}),
    )
    .expect_error(400, "invalid_request_error");
    // Errors: unknown thread, unknown route, wrong method, broken encoding.
    gw.get("/v1/memory/threads/nope", &[])
        .expect_error(404, "invalid_request_error");
    gw.get("/v1/memory/nothing", &[])
        .expect_error(404, "invalid_request_error");
    call(&gw, "PUT", "/v1/memory/threads/api-1", &json!({})).expect_error(405, "invalid_request_error");
    gw.get("/v1/memory/threads/%zz", &[])
        .expect_error(400, "invalid_request_error");
    // Delete a thread; erase a resource with everything in it.
    assert_eq!(
        call(&gw, "DELETE", "/v1/memory/threads/a%2Fb%20c", &Value::Null).json()["deleted"],
        true
    );
    gw.get("/v1/memory/threads/a%2Fb%20c", &[])
        .expect_error(404, "invalid_request_error");
    let erased = call(&gw, "DELETE", "/v1/memory/resources/u1", &Value::Null).json();
    assert_eq!(erased["threads"], 1);
    assert_eq!(gw.get("/v1/memory/threads", &[]).json()["total"], 1);
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("api-1", "u1")), QUESTION)),
        "I don't know your name yet."
    );
}

#[test]
fn a_thread_far_past_its_threshold_is_observed_before_forwarding() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "buffer_tokens = 0");
    // Seed a thread through the API (which starts the observer only with `observer_model` set),
    // then lower its threshold.
    call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "behind", "resourceId": "alex"}),
    );
    let mut seeded = vec![
        json!({"role": "user", "content": INTRO}),
        json!({"role": "assistant", "content": "Noted."}),
    ];
    for i in 0..6 {
        seeded.push(json!({"role": "user", "content": format!("Filler message number {i} about nothing")}));
        seeded.push(json!({"role": "assistant", "content": "OK."}));
    }
    call(
        &gw,
        "POST",
        "/v1/memory/threads/behind/messages",
        &json!({"messages": seeded}),
    );
    call(
        &gw,
        "PATCH",
        "/v1/memory/threads/behind/observations/config",
        &json!({"messageTokens": 30}),
    );
    assert_eq!(record(&gw, "behind")["observerRuns"], 0);
    // The turn itself waits for the observer: its upstream request already carries observations.
    assert_eq!(
        answer(&say(&gw, &hdrs(&at("behind", "alex")), QUESTION)),
        "Your name is Alex."
    );
    // (Before them, memgate asked the mock for the model's context window: /props, /api/show.)
    let calls: Vec<String> = mock
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .map(|r| r["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(calls.len(), 2, "observer, then the turn");
    assert!(calls[0].contains("observer of memgate"));
    assert!(
        calls[1].contains("User stated their name is Alex.") && !calls[1].contains(INTRO),
        "{}",
        calls[1]
    );
    assert!(gw.log().contains("past blockAfter"));
}

#[test]
fn a_failing_observer_never_breaks_the_conversation() {
    let mock = Mock::start("fixtures/memory");
    // The observer model lives on a provider nobody listens on.
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n[memory]\nmessage_tokens = 30\nobserver_model = \"dead/model\"\n{}\n[providers.dead]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        provider("openai", &mock, "")
    ));
    let h = at("unlucky", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    let r = wait_record(&gw, "unlucky", "a failed observer run", |r| {
        r["failures"].as_u64() >= Some(1)
    });
    assert_eq!(r["observerRuns"], 0);
    // Even past blockAfter, the request goes through with the raw messages.
    for _ in 0..2 {
        assert_eq!(answer(&say(&gw, &hdrs(&h), QUESTION)), "Your name is Alex.");
    }
    // Tried once, then left alone while it backs off (no request waits on it meanwhile).
    let failures = gw
        .log()
        .matches("observer for thread \"unlucky\" failed (will retry later)")
        .count();
    assert_eq!(failures, 1, "{}", gw.log());
    assert_eq!(messages(&gw, "unlucky", &[]).len(), 6);
}

#[test]
fn history_imported_through_the_api_keeps_its_dates_and_is_observed() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "observer_model = \"openai/gpt-4o-mini\"\nmessage_tokens = 30");
    call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "old", "resourceId": "alex"}),
    );
    // Mastra's `createdAt`: an ISO instant, or epoch milliseconds (2023-05-01T10:01:00Z).
    let saved = call(
        &gw,
        "POST",
        "/v1/memory/threads/old/messages",
        &json!({"messages": [
            {"role": "user", "content": INTRO, "createdAt": "2023-05-01T10:00:00Z"},
            {"role": "assistant", "content": "Noted, Alex. I will keep my answers short from now on.",
             "createdAt": 1_682_935_260_000_u64}
        ]}),
    );
    assert_eq!(saved.status, 201, "{}", saved.text());
    let stored = messages(&gw, "old", &[]);
    assert_eq!(stored[0]["createdAt"], "2023-05-01T10:00:00.000Z");
    assert_eq!(stored[1]["createdAt"], "2023-05-01T10:01:00.000Z");
    // Past `message_tokens`, the save starts the observer as a chat turn would; it reads the
    // history under its own date, and `createdAt` is not part of any message.
    let r = wait_record(&gw, "old", "the observer", |r| r["observerRuns"] == 1);
    assert_eq!(r["failures"], 0);
    let observed = mock.last_body().to_string();
    assert!(
        observed.contains("May 1 2023:") && observed.contains("User (10:00): My name is Alex"),
        "{observed}"
    );
    assert!(!observed.contains("createdAt"), "{observed}");
    // Without a date memgate stamps the time of the save; a bad one is refused, naming the forms.
    for bad in [json!("yesterday"), json!("1682935200"), json!(true)] {
        let err = call(
            &gw,
            "POST",
            "/v1/memory/threads/old/messages",
            &json!({"messages": [{"role": "user", "content": "x", "createdAt": bad}]}),
        )
        .expect_error(400, "invalid_request_error");
        assert!(err["message"].as_str().unwrap().contains("epoch milliseconds"), "{err}");
    }
    assert_eq!(messages(&gw, "old", &[]).len(), 2, "a refused save stores nothing");
}

#[test]
fn a_reflector_run_failing_after_an_erase_leaves_nothing_behind() {
    // The reflector's upstream accepts, holds the connection until the erase is done, then
    // hangs up: the run fails after its thread and observations are gone.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    let (accepted_tx, accepted) = std::sync::mpsc::channel();
    let (erased, erased_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = upstream.accept() {
            let _ = accepted_tx.send(());
            let _ = erased_rx.recv_timeout(Duration::from_secs(10));
            drop(conn);
        }
    });
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(
        &mock,
        &format!(
            "message_tokens = 30
observation_tokens = 1
reflector_model = \"slow/model\"\n\
             [retry]\nmax_attempts = 1\n[providers.slow]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\""
        ),
    );
    // One turn passes message_tokens: the observer runs in the background, then the reflector.
    answer(&say(&gw, &hdrs(&at("doomed", "alex")), INTRO));
    accepted
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the reflector run did not start: {}", gw.log()));
    let erase = request(&gw.addr, "DELETE", "/v1/memory/resources/alex", &[], b"");
    assert_eq!(erase.json()["threads"], 1, "{}", erase.text());
    let _ = erased.send(());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("reflector for thread \"doomed\" failed") {
        assert!(Instant::now() < deadline, "the reflector did not fail: {}", gw.log());
        std::thread::sleep(Duration::from_millis(25));
    }
    // The failure's bookkeeping is written after its log line: a moment for it, then look. A
    // thread of the same id starts clean, with no record left from the erased one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.get("/v1/memory/threads", &[]).json()["total"], 0);
    let created = gw.post(
        "/v1/memory/threads",
        &[],
        &json!({"id": "doomed", "resourceId": "alex"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let r = record(&gw, "doomed");
    assert_eq!(
        (r["failures"].clone(), r["observerRuns"].clone()),
        (json!(0), json!(0)),
        "{r}"
    );
}

#[test]
fn a_stream_finishing_after_an_erase_stores_nothing() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &hdrs(&at("mid-stream", "alex")),
        &json!({"model": "openai/gpt-4o-mini", "stream": true,
                "messages": [{"role": "user", "content": "memgate-test: slow stream"}]}),
    );
    assert!(s.next_chunk().is_some(), "the stream began");
    let erase = request(&gw.addr, "DELETE", "/v1/memory/resources/alex", &[], b"");
    assert_eq!(erase.json()["threads"], 1, "the thread was bound when the stream began");
    let events = s.events();
    assert_eq!(events.last().unwrap().2, "[DONE]");
    // The answer's final write found its thread gone: nothing was recreated.
    assert_eq!(gw.get("/v1/memory/threads", &[]).json()["total"], 0);
    gw.get("/v1/memory/threads/mid-stream/messages", &[])
        .expect_error(404, "invalid_request_error");
}

// What a real small model does to memory, on recordings of SmolLM2-135M (fixtures/local).

/// The bodies of the requests the mock received that contain `marker`, as JSON.
fn asks(mock: &Mock, marker: &str) -> Vec<Value> {
    mock.requests()
        .into_iter()
        .filter_map(|r| r["body"].as_str().map(str::to_owned))
        .filter(|b| b.contains(marker))
        .map(|b| serde_json::from_str(&b).unwrap())
        .collect()
}

const STRICT: &str = "STRICT FORMAT REQUIRED";

#[test]
fn an_observer_answer_without_observations_is_refused_and_the_facts_stay_in_context() {
    let mock = Mock::start("fixtures/local");
    let gw = gateway(&mock, "message_tokens = 60");
    let h = at("lisbon", "alex");
    let fact = "My name is Alex and I live in Lisbon.";
    answer(&say(&gw, &hdrs(&h), fact));
    let r = wait_record(&gw, "lisbon", "a refused observer run", |r| r["failures"] == 1);
    // Both answers (the first, then the stricter retry) were refused; nothing was stored and
    // the cursor did not move.
    assert_eq!(
        (
            &r["refusedAnswers"],
            &r["observerRuns"],
            &r["observedMessages"],
            &r["observationTokenCount"]
        ),
        (&json!(2), &json!(0), &json!(0), &json!(0)),
        "{r}"
    );
    let observer = asks(&mock, "observer of memgate");
    assert_eq!(observer.len(), 2, "asked once, then once more strictly");
    assert!(!observer[0].to_string().contains(STRICT) && observer[1].to_string().contains(STRICT));
    // Every memory call is bounded.
    for ask in &observer {
        assert!(
            ask["max_tokens"].as_u64().is_some_and(|n| (256..=4096).contains(&n)),
            "{ask}"
        );
    }
    assert_eq!(
        gw.get("/v1/memory/threads/lisbon/observations", &[]).json()["observations"],
        ""
    );
    // The next request still carries the facts, raw, and none of the refused answers.
    mock.clear();
    answer(&say(&gw, &hdrs(&h), QUESTION));
    let sent = mock.last_body().to_string();
    assert!(sent.contains(fact), "{sent}");
    assert!(
        !sent.contains("ready to assist") && !sent.contains("<observations>"),
        "{sent}"
    );
}

#[test]
fn a_refused_observer_answer_is_asked_again_strictly_and_the_good_one_kept() {
    let mock = Mock::start("fixtures/local");
    let gw = gateway(&mock, "message_tokens = 40");
    let h = at("porto", "sam");
    answer(&say(
        &gw,
        &hdrs(&h),
        "My name is Sam and I live in Porto. I work as a baker.",
    ));
    let r = wait_record(&gw, "porto", "an observer run", |r| r["observerRuns"] == 1);
    assert_eq!((&r["refusedAnswers"], &r["failures"]), (&json!(1), &json!(0)), "{r}");
    let obs = gw.get("/v1/memory/threads/porto/observations", &[]).json();
    let text = obs["observations"].as_str().unwrap();
    assert!(text.contains("User's name is Sam; lives in Porto"), "{obs}");
    assert!(!text.contains("help you"), "{obs}");
}

#[test]
fn a_reflection_that_loops_or_loses_content_is_refused_and_the_observations_kept() {
    let mock = Mock::start("fixtures/local");
    let gw = gateway(&mock, "message_tokens = 40\nobservation_tokens = 20");
    let h = at("cats", "alex");
    answer(&say(
        &gw,
        &hdrs(&h),
        "I work as a nurse at the city hospital. I have two cats called Tom and Jerry. My favourite food is grilled sardines.",
    ));
    let r = wait_record(&gw, "cats", "a refused reflection", |r| {
        r["observerRuns"] == 1 && r["failures"] == 1
    });
    assert_eq!(
        (&r["reflectorRuns"], &r["generationCount"]),
        (&json!(0), &json!(0)),
        "{r}"
    );
    let reflector = asks(&mock, "reflector of memgate");
    // The ladder's three levels plus one stricter retry, every answer refused.
    assert_eq!(reflector.len(), 4, "{r}");
    assert_eq!(r["refusedAnswers"], 4, "{r}");
    assert!(reflector.iter().all(|a| a["max_tokens"].as_u64() >= Some(256)));
    let obs = gw.get("/v1/memory/threads/cats/observations", &[]).json();
    let lines = obs["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3, "{obs}");
    assert!(obs["observations"].as_str().unwrap().contains("Tom and Jerry"));
}

/// Seeds `thread` through the API with a few turns of `text`, then lowers its threshold so
/// the next request is past blockAfter.
fn seed_behind(gw: &Gateway, thread: &str, text: &str) {
    call(
        gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": thread, "resourceId": "alex"}),
    );
    let seeded: Vec<Value> = (0..4)
        .flat_map(|i| {
            [
                json!({"role": "user", "content": format!("{text} number {i}")}),
                json!({"role": "assistant", "content": "OK."}),
            ]
        })
        .collect();
    call(
        gw,
        "POST",
        &format!("/v1/memory/threads/{thread}/messages"),
        &json!({"messages": seeded}),
    );
    call(
        gw,
        "PATCH",
        &format!("/v1/memory/threads/{thread}/observations/config"),
        &json!({"messageTokens": 30}),
    );
}

#[test]
fn an_observer_that_never_finishes_does_not_hold_a_request_past_the_bound() {
    let mock = Mock::start("fixtures/local");
    // Defaults: a request waits at most 10 s for observation; the scripted observer takes 30.
    let gw = gateway(&mock, "");
    seed_behind(&gw, "stuck", "memgate-test: slow observer");
    let started = Instant::now();
    let res = say(&gw, &hdrs(&at("stuck", "alex")), QUESTION);
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it did not hang: {:?}",
        started.elapsed()
    );
    assert!(gw.log().contains("forwarding without waiting for it"), "{}", gw.log());
    // The request went out with the raw messages: nothing was lost for the wait.
    let turn = asks(&mock, QUESTION).pop().unwrap().to_string();
    assert!(turn.contains("memgate-test: slow observer number 0"), "{turn}");
    let observer = asks(&mock, "observer of memgate");
    assert!(observer[0]["max_tokens"].as_u64().is_some(), "{}", observer[0]);
}

#[test]
fn requests_past_block_after_join_the_run_under_way_instead_of_queueing_more() {
    let mock = Mock::start("fixtures/local");
    let gw = gateway(&mock, "max_wait_ms = 300\ncall_timeout_ms = 1500");
    seed_behind(&gw, "joined", "memgate-test: slow observer");
    // The first request starts the observer run (its call times out after 1.5 s) and stops
    // waiting for it after 300 ms; the next ones find it under way and join it rather than
    // queue runs of their own, which would each call the observer once it ends.
    for _ in 0..4 {
        assert_eq!(say(&gw, &hdrs(&at("joined", "alex")), QUESTION).status, 200);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let observer = asks(&mock, "observer of memgate");
    assert_eq!(observer.len(), 1, "{} observer calls for one thread", observer.len());
    assert!(
        gw.log().matches("forwarding without waiting for it").count() >= 4,
        "{}",
        gw.log()
    );
}

#[test]
fn memory_calls_obey_the_configured_bounds() {
    let mock = Mock::start("fixtures/local");
    let gw = gateway(
        &mock,
        "max_output_tokens = 100\ncall_timeout_ms = 1000\nmax_wait_ms = 200",
    );
    seed_behind(&gw, "bounded", "memgate-test: slow observer");
    answer(&say(&gw, &hdrs(&at("bounded", "alex")), QUESTION));
    let r = wait_record(&gw, "bounded", "a timed-out observer run", |r| r["failures"] == 1);
    assert_eq!(r["observedMessages"], 0, "{r}");
    assert!(gw.log().contains("did not answer within 1000 ms"), "{}", gw.log());
    assert_eq!(asks(&mock, "observer of memgate")[0]["max_tokens"], 100);
}

#[test]
fn a_request_crossing_the_threshold_does_not_wait_for_the_observer() {
    let mock = Mock::start("fixtures/local");
    // Buffered observation is on by default: every 20% of message_tokens, in the background.
    let gw = gateway(&mock, "message_tokens = 100");
    let h = at("garden", "alex");
    let first = "I am planning a vegetable garden with tomatoes and beans this spring.";
    answer(&say(&gw, &hdrs(&h), first));
    // Under the threshold, the scripted observer (1 s) already observed the first turn.
    let r = wait_record(&gw, "garden", "a buffered observation", |r| {
        r["buffered"]["chunks"] == 1
    });
    assert_eq!(
        (&r["observerRuns"], &r["observedMessages"]),
        (&json!(0), &json!(0)),
        "{r}"
    );
    mock.clear();
    // This turn takes the thread past 1.2 × the threshold.
    let long = format!(
        "Also, {}",
        "the soil near the fence stays wet after rain and the beds need compost. ".repeat(3)
    );
    answer(&say(&gw, &hdrs(&h), &long));
    let reqs = mock.requests();
    let first_body = reqs[0]["body"].as_str().unwrap();
    // No observer call came before the turn: the buffered observations took the first turn's
    // place in its context.
    assert!(!first_body.contains("observer of memgate"), "{first_body}");
    assert!(
        first_body.contains("User is growing a vegetable garden"),
        "{first_body}"
    );
    assert!(!first_body.contains(first), "{first_body}");
    let r = record(&gw, "garden");
    assert_eq!(
        (&r["observerRuns"], &r["observedMessages"]),
        (&json!(1), &json!(2)),
        "{r}"
    );
}

/// Deletes the oldest stored message of `thread` (resource alex) through the memory API, then
/// says each of `turns` on it.
fn delete_the_first_then_say(gw: &Gateway, thread: &str, turns: impl IntoIterator<Item = String>) {
    let first = messages(gw, thread, &[])[0]["id"].clone();
    let path = format!("/v1/memory/threads/{thread}/messages");
    let del = call(gw, "DELETE", &path, &json!({"messageIds": [first]}));
    assert_eq!(del.status, 200, "{}", del.text());
    let h = at(thread, "alex");
    for text in turns {
        answer(&say(gw, &hdrs(&h), &text));
    }
}

/// Waits until the thread's observer either committed a run or counted a failure.
fn observed_or_failed(gw: &Gateway, thread: &str) -> Value {
    wait_record(gw, thread, "an observer run or a failure", |r| {
        r["observerRuns"].as_u64() > Some(0) || r["failures"].as_u64() > Some(0)
    })
}

#[test]
fn deleting_the_message_at_the_cursor_does_not_stop_observation() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "message_tokens = 60\nbuffer_tokens = 0");
    let h = at("gap", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    // The cursor is on this message's seq; once it is gone, the oldest unobserved is the next.
    delete_the_first_then_say(
        &gw,
        "gap",
        (0..4).map(|i| format!("Tell me something nice, number {i}")),
    );
    let r = observed_or_failed(&gw, "gap");
    assert_eq!(r["failures"], 0, "{r}\n{}", gw.log());
    assert!(r["observedMessages"].as_u64() > Some(0), "{r}");
}

#[test]
fn a_message_deleted_after_it_was_buffered_never_reaches_the_observations() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "message_tokens = 100");
    let h = at("private", "alex");
    let intro = format!(
        "{INTRO} {}",
        "I keep a small garden with tomatoes and beans. ".repeat(2)
    );
    answer(&say(&gw, &hdrs(&h), &intro));
    wait_record(&gw, "private", "a buffered observation", |r| {
        r["buffered"]["chunks"] == 1
    });
    let long = format!("Also, {}", "the soil near the fence stays wet after rain. ".repeat(4));
    delete_the_first_then_say(&gw, "private", vec![long; 3]);
    let r = observed_or_failed(&gw, "private");
    assert_eq!(r["failures"], 0, "{r}");
    let obs = gw.get("/v1/memory/threads/private/observations", &[]).json();
    let text = obs["observations"].as_str().unwrap();
    assert!(!text.is_empty(), "{obs}");
    assert!(!text.contains("Alex"), "a deleted message was observed: {text}");
}

#[test]
fn buffered_observation_goes_on_after_the_message_at_the_cursor_is_deleted() {
    let mock = Mock::start("fixtures/memory");
    let gw = gateway(&mock, "message_tokens = 200");
    let h = at("gap-buffered", "alex");
    answer(&say(&gw, &hdrs(&h), INTRO));
    let more = format!("Also, {}", "the soil near the fence stays wet after rain. ".repeat(3));
    delete_the_first_then_say(&gw, "gap-buffered", vec![more; 3]);
    let r = wait_record(&gw, "gap-buffered", "a buffered observation", |r| {
        r["buffered"]["chunks"].as_u64() > Some(0) || r["observerRuns"].as_u64() > Some(0)
    });
    assert_eq!(r["failures"], 0, "{r}");
}

#[test]
fn observation_never_leaves_a_tool_result_opening_the_context() {
    let history = [
        json!({"role": "user", "content": "Please check the weather in Lisbon for my trip tomorrow."}),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Lisbon\",\"day\":\"tomorrow\"}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees, light wind from the north."}),
        json!({"role": "assistant", "content": "Tomorrow Lisbon will be sunny and mild, around 21 degrees."}),
        json!({"role": "user", "content": "Great, then I will pack light clothes for the whole week."}),
        json!({"role": "assistant", "content": "Good plan; a light jacket for the evenings may help."}),
    ];
    let size = |m: &Value| memgate::ir::tokens::message(&serde_json::from_value(m.clone()).unwrap());
    // Just what is left from the tool result on: observing stops once the call is observed.
    let from_the_result: u64 = history[2..].iter().map(size).sum();
    let mock = Mock::start("fixtures/memory");
    // The observer's model has a tiny window: each run observes one message (or call group).
    let gw = gateway(
        &mock,
        &format!(
            "observer_model = \"small/gpt-4o-mini\"\nmessage_tokens = {from_the_result}\nbuffer_tokens = 0\n{}",
            provider("small", &mock, "context_window = 256")
        ),
    );
    let made = call(
        &gw,
        "POST",
        "/v1/memory/threads",
        &json!({"id": "trip", "resourceId": "alex"}),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let added = call(
        &gw,
        "POST",
        "/v1/memory/threads/trip/messages",
        &json!({"messages": history}),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    wait_record(&gw, "trip", "two observer runs", |r| {
        r["observerRuns"].as_u64() >= Some(2) && r["isObserving"] == false
    });
    mock.clear();
    let h = at("trip", "alex");
    answer(&say(&gw, &hdrs(&h), "What should I wear?"));
    let turn = mock
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .map(|r| serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap())
        .find(|b| !b.to_string().contains("observer of memgate"))
        .unwrap();
    let sent: Vec<&Value> = turn["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] != "system")
        .collect();
    assert_eq!(sent[0]["role"], "user", "{turn}");
    // Any tool result that is sent comes after the call it answers.
    if let Some(result) = sent.iter().position(|m| m["role"] == "tool") {
        assert!(sent[..result].iter().any(|m| m["tool_calls"].is_array()), "{turn}");
    }
}
