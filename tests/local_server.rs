//! A local OpenAI-compatible server as an air-gapped host runs one (llama-cpp-python serving
//! SmolLM2), replayed from its recordings in `fixtures/local/prov-*` (see fixtures/local/README.md),
//! through the real binary: streams that carry no usage, a server without the Responses API, a
//! model list to read from the upstream, and an embeddings error that no retry can fix.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A mock replaying only the `prov-*` recordings of the local server (other recordings in
/// fixtures/local answer other tests' prompts).
fn local_server() -> Mock {
    let dir = temp_dir("local-fixtures");
    for entry in std::fs::read_dir(repo().join("fixtures/local")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("prov-") && path.is_dir() {
            copy_dir(&path, &dir.join(&name));
        }
    }
    Mock::start(dir.to_str().unwrap())
}

fn copy_dir(from: &PathBuf, to: &PathBuf) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// memgate in front of `mock` as a new user configures a local server: a base URL, no key, no
/// model list, nothing about Responses.
fn gateway(mock: &Mock, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"local\"\n{extra}\n[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        mock.url
    ))
}

fn count_stream(include_usage: Option<bool>) -> Value {
    let mut body = json!({"model": "local/smollm2", "stream": true, "max_tokens": 12,
        "messages": [{"role": "user", "content": "Count from 1 to 5"}]});
    if let Some(u) = include_usage {
        body["stream_options"] = json!({"include_usage": u});
    }
    body
}

/// The `data:` payloads of a stream.
fn stream_events(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &Value) -> Vec<(Option<String>, Value)> {
    let mut s = Stream::open(&gw.addr, path, headers, body);
    assert_eq!(s.status, 200);
    s.events()
        .into_iter()
        .map(|(_, e, d)| (e, serde_json::from_str(&d).unwrap_or(Value::String(d))))
        .collect()
}

/// The caller's usage rows, once the stream's log line (which records usage) is written.
fn usage_rows(gw: &Gateway, streams: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    while gw.log().matches("stream=complete").count() < streams {
        assert!(Instant::now() < until, "no stream ended:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.get("/v1/usage?group_by=model", &[]).json()["data"]
        .as_array()
        .unwrap()
        .clone()
}

fn metric(gw: &Gateway, line_start: &str) -> u64 {
    let text = gw.get("/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[test]
fn a_stream_the_server_reports_no_usage_for_is_counted_by_estimate() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let events = stream_events(&gw, "/v1/chat/completions", &[], &count_stream(None));
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(
        events.iter().all(|(_, e)| e.get("usage").is_none()),
        "a client that did not ask gets no usage: {events:?}"
    );
    // The upstream was asked for usage (and, being llama-cpp-python, sent none).
    assert_eq!(mock.last_body()["stream_options"], json!({"include_usage": true}));
    let rows = usage_rows(&gw, 1);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let (prompt, completion) = (
        row["prompt_tokens"].as_u64().unwrap(),
        row["completion_tokens"].as_u64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{row}");
    assert_eq!(row["total_tokens"].as_u64().unwrap(), prompt + completion);
    assert_eq!(
        row["estimated_tokens"], row["total_tokens"],
        "marked as an estimate: {row}"
    );
    assert!(gw.log().contains("usage=estimated"), "{}", gw.log());
    let model = "{model=\"local/smollm2\",kind=\"completion\"}";
    assert_eq!(metric(&gw, &format!("memgate_tokens_total{model}")), completion);
    assert_eq!(
        metric(&gw, &format!("memgate_tokens_estimated_total{model}")),
        completion
    );
}

#[test]
fn a_client_that_asks_for_usage_gets_a_usage_chunk_even_when_the_server_sends_none() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let events = stream_events(&gw, "/v1/chat/completions", &[], &count_stream(Some(true)));
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let usage = &events[events.len() - 2].1;
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert_eq!(usage["object"], "chat.completion.chunk");
    assert_eq!(usage["model"], "local/smollm2");
    let u = &usage["usage"];
    assert!(
        u["prompt_tokens"].as_u64().unwrap() > 0 && u["completion_tokens"].as_u64().unwrap() > 0,
        "{u}"
    );
    // The text was "1. 1\n2. 2\n3." : the estimate counts what arrived.
    let text: String = events
        .iter()
        .filter_map(|(_, e)| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "1. 1\n2. 2\n3.");
    let row = &usage_rows(&gw, 1)[0];
    assert_eq!(
        row["total_tokens"], u["total_tokens"],
        "the client and /v1/usage agree: {row}"
    );
}

#[test]
fn an_upstreams_own_usage_is_counted_and_kept_from_a_client_that_did_not_ask() {
    // OpenAI's recording sends a usage chunk when asked, as memgate now always asks.
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&provider("openai", &mock, ""));
    let mut body = count_stream(None);
    body["model"] = json!("openai/gpt-4o-mini");
    let events = stream_events(&gw, "/v1/chat/completions", &[], &body);
    assert_eq!(mock.requests()[0]["fixture"], "040_chat_count_stream_usage");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(
        events
            .iter()
            .all(|(_, e)| e.get("usage").is_none() && e["choices"] != json!([])),
        "the usage chunk went to a client that did not ask for it: {events:?}"
    );
    let row = &usage_rows(&gw, 1)[0];
    // 040's own count, not an estimate.
    assert_eq!(
        (
            row["prompt_tokens"].as_u64(),
            row["completion_tokens"].as_u64(),
            row["estimated_tokens"].as_u64()
        ),
        (Some(18), Some(9), Some(0)),
        "{row}"
    );
    assert!(!gw.log().contains("usage=estimated"));
}

#[test]
fn anthropic_sdk_streams_over_a_local_server_report_usage() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let body = json!({"model": "local/smollm2", "max_tokens": 12, "stream": true,
        "messages": [{"role": "user", "content": "Count from 1 to 5"}]});
    let events = stream_events(&gw, "/v1/messages", &[], &body);
    let delta = events
        .iter()
        .find(|(e, _)| e.as_deref() == Some("message_delta"))
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("no message_delta: {events:?}"));
    let u = &delta["usage"];
    assert!(u["input_tokens"].as_u64().unwrap() > 0, "{delta}");
    assert!(u["output_tokens"].as_u64().unwrap() > 0, "{delta}");
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));
    // llama-cpp-python reads max_tokens, not max_completion_tokens: both go, so the answer is bounded.
    let sent = mock.last_body();
    assert_eq!(
        (sent["max_tokens"].clone(), sent["max_completion_tokens"].clone()),
        (json!(12), json!(12))
    );
}

/// The paths the mock was asked for, in order.
fn paths(mock: &Mock) -> Vec<String> {
    mock.requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_owned())
        .collect()
}

const HI: &str = "I'm glad you're here! I'm a helpful AI, and I can";

fn say_hi(stream: bool) -> Value {
    json!({"model": "local/smollm2", "input": "Say hi", "max_output_tokens": 16, "stream": stream})
}

#[test]
fn responses_to_a_server_without_them_go_through_chat_from_then_on() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let r = gw.post("/v1/responses", &[], &say_hi(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["object"], "response");
    assert_eq!(out["output"][0]["content"][0]["text"], HI, "{out}");
    assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0, "{out}");
    // Tried as Responses once, answered through chat.
    assert_eq!(paths(&mock), ["/v1/responses", "/v1/chat/completions"]);
    let chat = mock.last_body();
    assert_eq!(chat["messages"], json!([{"role": "user", "content": "Say hi"}]));
    assert_eq!(chat["max_tokens"], 16, "{chat}");
    assert!(gw.log().contains("has no /responses endpoint"), "{}", gw.log());

    // Remembered: the next ones, streamed too, go straight to chat.
    mock.clear();
    let events = stream_events(&gw, "/v1/responses", &[], &say_hi(true));
    assert_eq!(paths(&mock), ["/v1/chat/completions"]);
    let kinds: Vec<&str> = events.iter().filter_map(|(e, _)| e.as_deref()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    // Cut at max_output_tokens, as recorded: OpenAI's event for that.
    assert_eq!(kinds.last(), Some(&"response.incomplete"));
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["incomplete_details"]["reason"], "max_output_tokens", "{done}");
    assert_eq!(done["output"][0]["content"][0]["text"], HI, "{done}");
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0, "{done}");
}

#[test]
fn memory_over_responses_to_a_server_without_them_stores_the_exchange() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let h = [("x-thread-id", "t-local"), ("x-resource-id", "alex")];
    // Streamed, on the first request: the 404 comes after memory's turn began.
    let events = stream_events(&gw, "/v1/responses", &h, &say_hi(true));
    assert_eq!(events.last().unwrap().0.as_deref(), Some("response.incomplete"));
    let r = gw.post("/v1/responses", &h, &say_hi(false));
    assert_eq!(r.status, 200, "{}", r.text());
    let stored = gw.get("/v1/memory/threads/t-local/messages", &[]).json()["messages"].clone();
    let turns: Vec<(String, Value)> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].clone()))
        .collect();
    let user = ("user".to_owned(), json!("Say hi"));
    let answer = ("assistant".to_owned(), json!(HI));
    assert_eq!(turns, [user.clone(), answer.clone(), user, answer]);
}

#[test]
fn the_responses_setting_forces_either_way() {
    let mock = local_server();
    let passthrough = Gateway::start(&format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nresponses = \"passthrough\"\n",
        mock.url
    ));
    for _ in 0..2 {
        let e = passthrough
            .post("/v1/responses", &[], &say_hi(false))
            .expect_error(404, "not_found_error");
        assert!(e["message"].as_str().unwrap().contains("Not Found"), "{e}");
    }
    assert_eq!(paths(&mock), ["/v1/responses", "/v1/responses"]);
    mock.clear();
    let chat = Gateway::start(&format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nresponses = \"chat\"\n",
        mock.url
    ));
    assert_eq!(chat.post("/v1/responses", &[], &say_hi(false)).status, 200);
    assert_eq!(paths(&mock), ["/v1/chat/completions"]);
    // Only OpenAI-compatible providers take the setting.
    let mut bad = std::process::Command::new(MEMGATE)
        .args(["check-config", "--config"])
        .arg({
            let dir = temp_dir("bad-config");
            let path = dir.join("memgate.toml");
            std::fs::write(&path, "[providers.a]\nkind = \"anthropic\"\nresponses = \"chat\"\n").unwrap();
            path
        })
        .output()
        .unwrap();
    assert!(!bad.status.success());
    bad.stderr.extend_from_slice(&bad.stdout);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("responses applies to OpenAI-compatible"));
}

#[test]
fn the_python_sdks_responses_work_against_a_server_without_them() {
    if skip_without(python_has("openai"), "the python3 OpenAI SDK") {
        return;
    }
    let mock = local_server();
    let gw = gateway(&mock, "");
    let out = std::process::Command::new("python3")
        .arg(repo().join("tests/sdk/python/local_responses.py"))
        .env("MEMGATE_BASE_URL", format!("http://{}/v1", gw.addr))
        .env("MEMGATE_API_KEY", "anything")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("3 passed, 0 failed"),
        "{stdout}\n{}\n--- gateway log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[test]
fn models_are_listed_from_the_upstream_and_unknown_ids_are_404() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let list = gw.get("/v1/models", &[]).json();
    assert_eq!(ids(&list), ["local/smollm2", "local/smollm2-tools"], "{list}");
    assert_eq!(list["data"][0]["owned_by"], "local");
    // Cached: a second listing and lookups ask the upstream nothing.
    assert_eq!(gw.get("/v1/models", &[]).json(), list);
    for id in ["local/smollm2", "local%2Fsmollm2", "smollm2", "local/smollm2-tools"] {
        let r = gw.get(&format!("/v1/models/{id}"), &[]);
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let want = if id == "smollm2" { "smollm2" } else { id };
        assert_eq!(r.json()["id"], want.replace("%2F", "/"), "{id}");
    }
    assert_eq!(paths(&mock), ["/v1/models"]);
    for id in ["local/nosuch", "local%2Fnosuch", "nosuch", "nowhere/x"] {
        let e = gw
            .get(&format!("/v1/models/{id}"), &[])
            .expect_error(404, "invalid_request_error");
        assert_eq!(e["code"], "model_not_found", "{id}: {e}");
    }
    gw.get("/v1/models/local%2", &[])
        .expect_error(400, "invalid_request_error");
}

#[test]
fn an_upstream_that_cannot_list_costs_only_its_own_models() {
    let mock = local_server();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A listener that accepts and never answers: the listing waits its bound, not forever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = Gateway::start(&format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodels = \"auto\"\n\
         [providers.dead]\nkind = \"openai\"\nbase_url = \"http://{dead}/v1\"\n\
         [providers.silent]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\nmodels = [\"fixed\"]\n\
         [providers.slow]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"http://{dead}\"\n",
        mock.url,
        silent.local_addr().unwrap(),
        silent.local_addr().unwrap()
    ));
    let started = Instant::now();
    let r = gw.get("/v1/models", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ids(&r.json()), ["local/smollm2", "local/smollm2-tools", "silent/fixed"]);
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    // A configured list is never asked of the upstream; nor is a kind memgate does not list.
    assert_eq!(gw.get("/v1/models/silent/fixed", &[]).status, 200);
    gw.get("/v1/models/silent/other", &[])
        .expect_error(404, "invalid_request_error");
    // What cannot be listed is not refused by name: the upstream will say.
    assert_eq!(gw.get("/v1/models/claude/claude-sonnet-4", &[]).status, 200);
    assert_eq!(gw.get("/v1/models/dead/anything", &[]).status, 200);
    drop(silent);
}

#[test]
fn an_embeddings_error_that_can_never_succeed_is_not_retried() {
    let mock = local_server();
    let gw = gateway(&mock, "");
    let body = json!({"model": "local/smollm2", "input": "The quick brown fox"});
    let e = gw
        .post("/v1/embeddings", &[], &body)
        .expect_error(500, "internal_server_error");
    assert_eq!(
        e["message"],
        "Llama model must be created with embedding=True to call this method"
    );
    assert_eq!(paths(&mock), ["/v1/embeddings"], "tried once");
    assert!(!gw.log().contains("attempts="), "{}", gw.log());
}
