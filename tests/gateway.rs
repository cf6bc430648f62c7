//! The gateway end to end: real `memgate` in front of a fixture upstream, over real sockets.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn gateway(mock: &Mock, extra: &str) -> Gateway {
    // `extra` comes first so its top-level keys stay outside the provider table.
    Gateway::start(&format!(
        "default_provider = \"openai\"\n{extra}\n{}",
        provider("openai", mock, "models = [\"gpt-4o-mini\"]\n")
    ))
}

/// A non-streamed chat request for `model` with one user message.
fn chat(gw: &Gateway, model: &str, text: &str) -> Resp {
    gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": model, "messages": user(text)}),
    )
}

/// Waits (briefly) for the gateway log to mention `needle`: streams log when they end.
fn wait_for_log(gw: &Gateway, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !gw.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "log lacks {needle:?}: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[test]
fn chat_completion_passes_parameters_through_and_names_the_asked_model() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body = json!({
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are a calculator."}, {"role": "user", "content": "What is 2+2? Reply with just the number."}],
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 20, "frequency_penalty": 0.5, "presence_penalty": -0.5,
        "seed": 7, "stop": ["\n"], "user": "u-1", "logit_bias": {"50256": -100}, "someFutureField": {"nested": [1, 2]}
    });
    let res = gw.post(
        "/v1/chat/completions",
        &[("authorization", "Bearer placeholder")],
        &body,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let out = res.json();
    assert_eq!(out["model"], "openai/gpt-4o-mini");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], "4");
    assert!(out["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let mut sent = mock.last_body();
    assert_eq!(sent["model"], "gpt-4o-mini", "the provider prefix is stripped upstream");
    let mut want = body.clone();
    want["model"] = json!("gpt-4o-mini");
    sent.as_object_mut().unwrap().remove("model");
    want.as_object_mut().unwrap().remove("model");
    assert_eq!(sent, want, "every other field reaches the upstream untouched");
    // mode = none on loopback: the client's placeholder is ignored, the configured key goes up.
    assert_eq!(
        mock.last_header("authorization").as_deref(),
        Some("Bearer sk-configured-openai")
    );
}

#[test]
fn unprefixed_model_uses_the_default_provider() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let res = chat(&gw, "gpt-4o-mini", "What is 2+2? Reply with just the number.");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["model"], "gpt-4o-mini");
    assert_eq!(mock.last_body()["model"], "gpt-4o-mini");
}

#[test]
fn streamed_events_reach_the_client_as_the_upstream_sends_them() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body = json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": user("memgate-test: slow stream")});
    let mut s = Stream::open(&gw.addr, "/v1/chat/completions", &[], &body);
    assert_eq!(s.status, 200);
    assert!(s
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")));
    let events = s.events();
    assert_eq!(events.len(), 8, "{events:?}");
    // The upstream spaces its 8 events 300 ms apart. Buffering anywhere would bunch them up;
    // flowing through, each arrives at least ~250 ms after the one before.
    for pair in events.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(250),
            "events bunched: gap {gap:?} in {events:?}"
        );
    }
    let text: String = events
        .iter()
        .filter(|e| e.2 != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(&e.2).unwrap())
        .inspect(|c| assert_eq!(c["model"], "openai/gpt-4o-mini"))
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "One, two, three");
    assert_eq!(events.last().unwrap().2, "[DONE]");
    wait_for_log(&gw, "stream=complete");
}

#[test]
fn an_upstream_stream_that_breaks_off_ends_with_an_error_event_not_done() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body = json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": user("memgate-test: truncated")});
    let events = Stream::open(&gw.addr, "/v1/chat/completions", &[], &body).events();
    let last: Value = serde_json::from_str(&events.last().unwrap().2).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{events:?}");
    assert!(events.iter().all(|e| e.2 != "[DONE]"));
    assert!(
        events.iter().any(|e| e.2.contains("Partial")),
        "what arrived before the break is delivered"
    );
    wait_for_log(&gw, "stream=interrupted");
}

#[test]
fn a_client_that_hangs_up_mid_stream_cancels_the_upstream_request() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body = json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": user("memgate-test: long stream")});
    let mut s = Stream::open(&gw.addr, "/v1/chat/completions", &[], &body);
    assert!(s.next_chunk().is_some());
    s.close();
    // The upstream would take 60 × 200 ms = 12 s to finish; it must be abandoned long before.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let reqs = mock.requests();
        if reqs[0]["stream"] == "abandoned" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream stream still running: {reqs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn upstream_connections_are_reused() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    for _ in 0..3 {
        let res = chat(&gw, "openai/x", "What is 2+2? Reply with just the number.");
        assert_eq!(res.status, 200);
    }
    let ports: Vec<Value> = mock.requests().iter().map(|r| r["peer_port"].clone()).collect();
    assert!(
        ports.windows(2).all(|w| w[0] == w[1]),
        "each request opened a new connection: {ports:?}"
    );
}

#[test]
fn embeddings_are_re_encoded_as_base64_when_the_upstream_ignores_the_format() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body =
        json!({"model": "openai/nomic-embed-text", "input": "memgate-test: floats", "encoding_format": "base64"});
    let out = gw.post("/v1/embeddings", &[], &body).json();
    assert_eq!(out["model"], "openai/nomic-embed-text");
    let mut want = Vec::new();
    for f in [0.5f32, -0.25, 1.0, 0.125] {
        want.extend_from_slice(&f.to_le_bytes());
    }
    let got = out["data"][0]["embedding"].as_str().expect("base64 string");
    assert_eq!(decode_base64(got), want);
    // Asked for floats, floats stay floats.
    let body = json!({"model": "openai/nomic-embed-text", "input": "memgate-test: floats"});
    assert_eq!(
        gw.post("/v1/embeddings", &[], &body).json()["data"][0]["embedding"],
        json!([0.5, -0.25, 1.0, 0.125])
    );
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| {
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            .bytes()
            .position(|x| x == c)
            .unwrap() as u32
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (val(c) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[test]
fn models_are_listed_with_their_provider_prefix() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let out = gw.get("/v1/models", &[]).json();
    assert_eq!(out["object"], "list");
    assert_eq!(
        out["data"],
        json!([{"id": "openai/gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}])
    );
    assert_eq!(
        gw.get("/v1/models/openai/gpt-4o-mini", &[]).json()["id"],
        "openai/gpt-4o-mini"
    );
    // Unknown ids are a 404 in OpenAI's shape, whether the provider or only the model is.
    for id in ["nosuch/x", "openai/gpt-4o", "openai%2Fgpt-4o"] {
        let e = gw
            .get(&format!("/v1/models/{id}"), &[])
            .expect_error(404, "invalid_request_error");
        assert_eq!(e["code"], "model_not_found", "{id}");
    }
    assert_eq!(gw.get("/healthz", &[]).json()["status"], "ok");
}

#[test]
fn bad_requests_get_openai_shaped_errors_with_the_right_status() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "max_body_bytes = 4096\n");
    let raw = |method: &str, path: &str, body: &[u8]| request(&gw.addr, method, path, &[], body);
    raw("POST", "/v1/chat/completions", b"{not json").expect_error(400, "invalid_request_error");
    raw("POST", "/v1/chat/completions", b"").expect_error(400, "invalid_request_error");
    let e = raw("POST", "/v1/chat/completions", br#"{"model":"openai/x"}"#).expect_error(400, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("messages"), "{e}");
    raw("POST", "/v1/chat/completions", br#"{"model":"openai/x","messages":[]}"#)
        .expect_error(400, "invalid_request_error");
    raw("POST", "/v1/embeddings", br#"{"model":"openai/x"}"#).expect_error(400, "invalid_request_error");
    raw("GET", "/v1/nothing", b"").expect_error(404, "invalid_request_error");
    raw("GET", "/v1/chat/completions", b"").expect_error(405, "invalid_request_error");
    let big = format!(
        r#"{{"model":"openai/x","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(1 << 20)
    );
    let e = raw("POST", "/v1/chat/completions", big.as_bytes()).expect_error(413, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("max_body_bytes"), "{e}");
    let e = chat(&gw, "nosuch/model", "hi").expect_error(400, "invalid_request_error");
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(mock.requests().len(), 0, "no bad request reached the upstream");
    // The server is still fine.
    assert_eq!(gw.get("/healthz", &[]).status, 200);
}

#[test]
fn malformed_http_and_slow_heads_are_answered_and_closed() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "[timeouts]\nheader_ms = 300\n");
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\"error\""), "{out}");

    let mut s = TcpStream::connect(&gw.addr).unwrap();
    let flood = format!(
        "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    s.write_all(flood.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    let mut s = TcpStream::connect(&gw.addr).unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gw.get("/healthz", &[]).status, 200);
}

#[test]
fn upstream_failures_map_to_gateway_statuses() {
    let mock = Mock::start("fixtures/openai");
    // A port nothing listens on: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        "[providers.dead]\nkind = \"openai\"\nbase_url = \"http://{dead}/v1\"\n[timeouts]\nfirst_byte_ms = 500\n"
    );
    let gw = gateway(&mock, &extra);
    chat(&gw, "dead/x", "hi").expect_error(502, "upstream_error");
    let e = chat(&gw, "openai/x", "memgate-test: hang").expect_error(504, "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("first_byte_ms"), "{e}");
    let e = chat(&gw, "openai/x", "memgate-test: html error").expect_error(503, "server_error");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("503 Service Temporarily Unavailable"),
        "{e}"
    );
}

#[test]
fn https_upstreams_are_verified_against_the_hosts_ca_roots() {
    let mock = Mock::start_with(
        "fixtures/openai",
        &["--tls", "fixtures/tls/server.pem", "fixtures/tls/server.pkcs8.key"],
    );
    assert!(mock.url.starts_with("https://127.0.0.1:"));
    let url = mock.url.replace("127.0.0.1", "localhost");
    let config = format!("[providers.tls]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\n");
    let ca = repo().join("fixtures/tls/ca.pem");
    let body = json!({"model": "tls/gpt-4o-mini", "messages": user("What is 2+2? Reply with just the number.")});

    let trusted = Gateway::start_in(&temp_dir("tls"), &config, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let res = trusted.post("/v1/chat/completions", &[], &body);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["choices"][0]["message"]["content"], "4");
    let stream = json!({"model": "tls/gpt-4o-mini", "stream": true, "messages": user("memgate-test: slow stream")});
    assert_eq!(
        Stream::open(&trusted.addr, "/v1/chat/completions", &[], &stream)
            .events()
            .last()
            .unwrap()
            .2,
        "[DONE]"
    );

    // Without the test CA the certificate is unknown: verification fails closed.
    let empty = temp_dir("no-ca").join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let untrusted = Gateway::start_in(
        &temp_dir("tls2"),
        &config,
        &[
            ("SSL_CERT_FILE", empty.to_str().unwrap()),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    let e = untrusted
        .post("/v1/chat/completions", &[], &body)
        .expect_error(502, "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("TLS"), "{e}");
}

#[test]
fn a_client_that_hangs_up_before_a_slow_answer_cancels_the_upstream_request() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock, "");
    let body = json!({"model": "openai/x", "messages": user("memgate-test: hang")}).to_string();
    let mut s = TcpStream::connect(&gw.addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    // The upstream takes 3 s; the request must end (status 499, logged) well before that.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while !gw.log().contains("status=499") {
        assert!(
            std::time::Instant::now() < deadline,
            "request not abandoned: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mock = Mock::start("fixtures/openai");
    let mut gw = gateway(&mock, "");
    assert_eq!(gw.get("/healthz", &[]).status, 200);
    let status = gw.terminate();
    assert!(status.success(), "exit status {status:?}: {}", gw.log());
}
