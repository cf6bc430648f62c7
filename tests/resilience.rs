//! Routing under failure, through a real gateway in front of scripted upstreams that record
//! what they received: retries (counted), Retry-After, fallbacks from config, from the body's
//! `models` and from `providerOptions.gateway`, no retry once a stream has begun, and keep-alive
//! comments while an upstream is silent.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A gateway in front of `openai` (fixtures/openai) and `anthropic` (fixtures/anthropic).
fn setup(extra: &str) -> (Mock, Mock, Gateway) {
    let (openai, anthropic) = (Mock::start("fixtures/openai"), Mock::start("fixtures/anthropic"));
    let config = format!(
        "{extra}\n{}[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-x\"\n",
        provider("openai", &openai, ""),
        anthropic.url
    );
    let gw = Gateway::start(&config);
    (openai, anthropic, gw)
}

fn ask(gw: &Gateway, prompt: &str, extra: Value) -> Resp {
    let mut body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    gw.post("/v1/chat/completions", &[], &body)
}

fn wait_for_log(gw: &Gateway, needle: &str) {
    let until = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains(needle) {
        assert!(Instant::now() < until, "no {needle:?} in the log:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flaky_upstream_is_retried_until_it_answers() {
    let (openai, _a, gw) = setup("");
    let r = ask(&gw, "memgate-test: flaky", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "1, 2, 3, 4, 5");
    assert_eq!(openai.requests().len(), 3, "two 503s, then the answer");
    wait_for_log(&gw, "attempts=3");

    // Streams are retried too, as long as nothing has reached the client yet.
    let (openai, _a, gw) = setup("");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "memgate-test: flaky"}]}),
    );
    assert_eq!(s.status, 200);
    assert_eq!(s.events().last().unwrap().2, "[DONE]");
    assert_eq!(openai.requests().len(), 3);
}

#[test]
fn retry_after_is_honoured_and_errors_that_would_repeat_are_not_retried() {
    let (openai, _a, gw) = setup("");
    let started = Instant::now();
    let r = ask(&gw, "memgate-test: rate limited once", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not waited out"
    );
    assert_eq!(openai.requests().len(), 2);

    openai.clear();
    ask(&gw, "memgate-test: bad request", json!({})).expect_error(400, "invalid_request_error");
    assert_eq!(openai.requests().len(), 1, "a 400 is not retried");
}

#[test]
fn attempts_are_bounded_and_the_last_error_reaches_the_client() {
    let (openai, anthropic, gw) = setup("[retry]\nmax_attempts = 2\n");
    ask(&gw, "memgate-test: down", json!({})).expect_error(503, "server_error");
    assert_eq!(openai.requests().len(), 2);
    assert!(anthropic.requests().is_empty(), "no fallback was configured");
}

#[test]
fn fallbacks_from_config_and_body_answer_when_the_first_route_is_down() {
    let (openai, anthropic, gw) = setup("[fallbacks]\n\"openai/gpt-4o-mini\" = [\"anthropic/claude-sonnet-4\"]\n");
    let r = ask(&gw, "memgate-test: down", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["model"], "anthropic/claude-sonnet-4", "the answer names who answered");
    assert_eq!(v["choices"][0]["message"]["content"], "OK.");
    assert_eq!((openai.requests().len(), anthropic.requests().len()), (3, 1));
    wait_for_log(&gw, "via=anthropic/claude-sonnet-4");
    // A request the next route would refuse as well does not fall back.
    anthropic.clear();
    ask(&gw, "memgate-test: bad request", json!({})).expect_error(400, "invalid_request_error");
    assert!(anthropic.requests().is_empty());

    // The body's own `models` list (Vercel's convention), without any config; it is not sent on.
    let (openai, anthropic, gw) = setup("[retry]\nmax_attempts = 1\n");
    let r = ask(
        &gw,
        "memgate-test: down",
        json!({"models": ["anthropic/claude-sonnet-4"]}),
    );
    assert_eq!(r.json()["model"], "anthropic/claude-sonnet-4");
    assert_eq!(openai.requests().len(), 1);
    assert!(anthropic.last_body().get("models").is_none());
    // A streamed answer names its fallback in every chunk.
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "models": ["anthropic/claude-sonnet-4"],
            "messages": [{"role": "user", "content": "memgate-test: down"}]}),
    );
    let first: Value = serde_json::from_str(&s.events()[0].2).unwrap();
    assert_eq!(first["model"], "anthropic/claude-sonnet-4");
}

#[test]
fn provider_order_and_only_pick_where_a_model_runs() {
    let backup = Mock::start("fixtures/openai");
    let (openai, _a, gw) = setup(&provider("backup", &backup, ""));
    let gateway = |order: Value, only: Value| json!({"providerOptions": {"gateway": {"order": order, "only": only}}});
    let r = ask(
        &gw,
        "Count from 1 to 5",
        gateway(json!(["backup", "openai"]), Value::Null),
    );
    assert_eq!(r.json()["model"], "backup/gpt-4o-mini");
    assert_eq!((backup.requests().len(), openai.requests().len()), (1, 0));
    assert!(backup.last_body().get("providerOptions").is_none());
    let r = ask(
        &gw,
        "Count from 1 to 5",
        gateway(json!(["backup", "openai"]), json!(["openai"])),
    );
    assert_eq!(r.json()["model"], "openai/gpt-4o-mini");
    assert_eq!(backup.requests().len(), 1, "only excluded backup");
    // A provider this gateway lacks is skipped (seeds written for other gateways name `vertex`);
    // allowing none of the configured ones leaves nothing to try.
    let r = ask(
        &gw,
        "Count from 1 to 5",
        gateway(json!(["vertex", "openai"]), Value::Null),
    );
    assert_eq!(r.json()["model"], "openai/gpt-4o-mini");
    ask(&gw, "hi", gateway(Value::Null, json!(["vertex"]))).expect_error(400, "invalid_request_error");
}

#[test]
fn a_stream_that_breaks_off_is_not_retried_and_ends_in_an_error() {
    let (openai, _a, gw) = setup("");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "memgate-test: truncated stream"}]}),
    );
    let events = s.events();
    assert!(events.iter().all(|e| e.2 != "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(&events.last().unwrap().2).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    assert_eq!(openai.requests().len(), 1, "the first bytes had reached the client");
}

#[test]
fn silent_upstreams_get_keep_alive_comments() {
    let (_o, _a, gw) = setup("[timeouts]\nsse_keepalive_ms = 100\n");
    let mut s = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "memgate-test: slow stream"}]}),
    );
    let mut raw = String::new();
    while let Some((_, chunk)) = s.next_chunk() {
        raw.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The upstream pauses 300 ms between its 8 events: at least one comment per pause.
    let comments = raw.matches(": keep-alive\n\n").count();
    assert!(comments >= 7, "{comments} keep-alive comments in:\n{raw}");
    assert!(
        raw.trim_end().ends_with("data: [DONE]") || raw.contains("data: [DONE]\n\n"),
        "{raw}"
    );
}

#[test]
fn a_refused_connection_is_retried_then_falls_back() {
    // Nothing listens on port 1: every connection attempt is refused before an answer began.
    let dead = "[providers.dead]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
                [fallbacks]\n\"dead/gpt-4o-mini\" = [\"openai/gpt-4o-mini\"]\n";
    let (openai, _a, gw) = setup(dead);
    let body = json!({"model": "dead/gpt-4o-mini", "messages": [{"role": "user", "content": "Count from 1 to 5"}]});
    let r = gw.post("/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "openai/gpt-4o-mini");
    assert_eq!(openai.requests().len(), 1);
    wait_for_log(&gw, "attempts=4 via=openai/gpt-4o-mini");
    // Without a fallback the client hears the last failure, after the same three attempts.
    let r = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "dead/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    );
    r.expect_error(502, "upstream_error");
    wait_for_log(&gw, "model=dead/gpt-4o status=502");
    assert!(gw.log().contains("provider 'dead': 502"), "{}", gw.log());
}

#[test]
fn order_and_only_route_an_unprefixed_name_without_a_default_provider() {
    let backup = Mock::start("fixtures/openai");
    let (openai, _a, gw) = setup(&provider("backup", &backup, ""));
    let unprefixed = |options: Value| {
        gw.post(
            "/v1/chat/completions",
            &[],
            &json!({"model": "gpt-4o-mini", "providerOptions": {"gateway": options},
                    "messages": [{"role": "user", "content": "Count from 1 to 5"}]}),
        )
    };
    let r = unprefixed(json!({"order": ["backup", "openai"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "backup/gpt-4o-mini");
    assert_eq!(backup.last_body()["model"], "gpt-4o-mini");
    let r = unprefixed(json!({"only": ["openai"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["model"], "openai/gpt-4o-mini");
    assert_eq!((backup.requests().len(), openai.requests().len()), (1, 1));
    // The first listed provider down: the name is tried on the next one.
    let r = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-4o-mini", "providerOptions": {"gateway": {"order": ["openai", "anthropic"]}},
                "messages": [{"role": "user", "content": "memgate-test: down"}]}),
    );
    assert_eq!(r.json()["model"], "anthropic/gpt-4o-mini", "{}", r.text());
    // Without order or only, an unprefixed name with no default_provider is still not routed.
    let r = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let e = r.expect_error(400, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("not routed"), "{e}");
}

#[test]
fn the_retried_statuses_are_configurable() {
    // 503 is not listed: the first one goes back to the client.
    let (openai, _a, gw) = setup("[retry]\nstatuses = [429, 500]\n");
    ask(&gw, "memgate-test: flaky", json!({})).expect_error(503, "server_error");
    assert_eq!(openai.requests().len(), 1);
    // A 400 listed is retried like any other listed status.
    let (openai, _a, gw) = setup("[retry]\nstatuses = [400]\nmax_attempts = 2\n");
    ask(&gw, "memgate-test: bad request", json!({})).expect_error(400, "invalid_request_error");
    assert_eq!(openai.requests().len(), 2);
    // Only error statuses can be listed.
    let dir = temp_dir("retry-config");
    std::fs::write(dir.join("memgate.toml"), "[retry]\nstatuses = [200]\n").unwrap();
    let out = std::process::Command::new(MEMGATE)
        .args(["check-config", "--config"])
        .arg(dir.join("memgate.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[retry] statuses"),
        "{out:?}"
    );
}
