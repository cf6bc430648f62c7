//! Hostile clients through the real server: oversized and malformed requests, slow and idle
//! connections, hostile ids and header values. Each case must end in a 4xx in the endpoint's
//! error shape or a closed connection, never a panic, and others must be served meanwhile.
//! `tests/gateway.rs` has the basic malformed-head, 413 and 400 cases; these go further.

mod common;
#[path = "hostile/fuzz.rs"]
mod fuzz;
#[path = "hostile/wire.rs"]
mod wire;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};
use wire::*;

/// Every JSON entry point, each with a path that reaches its body parser.
const JSON_ENTRY_POINTS: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/memory/threads"),
    ("PATCH", "/v1/memory/threads/t1"),
    ("POST", "/v1/memory/threads/t1/messages"),
    ("DELETE", "/v1/memory/threads/t1/messages"),
    ("PATCH", "/v1/memory/threads/t1/observations/config"),
];

/// A gateway with small limits and short client timeouts, and a memory thread `t1`.
fn hostile_gateway(mock: &Mock) -> Gateway {
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\nmax_body_bytes = 262144\n\
         [timeouts]\nheader_ms = 600\nbody_ms = 800\nkeepalive_ms = 2000\n{}",
        provider("openai", mock, "")
    ));
    let res = gw.post("/v1/memory/threads", &[], &json!({"id": "t1", "resourceId": "r1"}));
    assert_eq!(res.status, 201, "{}", res.text());
    gw
}

/// Asserts an error in the shape `path`'s clients read: Anthropic's on `/v1/messages`.
fn expect_shaped(path: &str, res: &Resp, status: u16) {
    assert_eq!(res.status, status, "{path}: {}", res.text());
    let body = res.json();
    if path == "/v1/messages" {
        assert_eq!(body["type"], "error", "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    } else {
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
        assert!(body["error"].get("code").is_some(), "{path}: {body}");
    }
}

#[test]
fn oversized_bodies_get_413_and_a_closed_connection() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    for &(method, path) in JSON_ENTRY_POINTS {
        // Declared far over the limit and never sent: answered at once, not after the body.
        let head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n");
        let out = exchange(&gw.addr, head.as_bytes(), Duration::from_secs(5));
        assert!(out.closed, "{path}: connection left open after a 413");
        expect_shaped(path, &out.response(), 413);
    }
    // Chunked bodies carry no length: the limit is found while reading.
    let mut chunked =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("2000\r\n{}\r\n", "a".repeat(0x2000)).as_bytes());
    }
    let out = exchange(&gw.addr, &chunked, Duration::from_secs(5));
    assert!(out.closed);
    let e = out.response().expect_error(413, "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("max_body_bytes"), "{e}");
    still_serving(&gw);
}

#[test]
fn header_floods_get_431_and_cost_no_memory() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let many = "x-h: y\r\n".repeat(200);
    let out = exchange(
        &gw.addr,
        format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.closed);
    out.response().expect_error(431, "invalid_request_error");
    // One endless header line: async-h1 alone buffers it whole (300 MB measured); the gateway
    // must answer after 8 KiB and stop reading soon after.
    let flood = flood_one_line(&gw.addr, 64 << 20);
    assert!(flood.sent < 32 << 20, "the gateway kept reading: {} bytes", flood.sent);
    assert!(flood.answer.starts_with("HTTP/1.1 431"), "{}", flood.answer);
    let peak = peak_rss_kib(gw.pid());
    assert!(peak < 48 << 10, "gateway peaked at {peak} KiB");
    still_serving(&gw);
}

#[test]
fn slow_heads_and_slow_bodies_time_out_while_others_are_served() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n".to_vec();
    let body_head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 4000\r\n\r\n{".to_vec();
    let slow: Vec<_> = (0..60)
        .map(|i| {
            let addr = gw.addr.clone();
            // Half trickle their head forever, half send a head and then trickle the body.
            let (prefix, drip) = if i % 2 == 0 {
                (head.clone(), b"x")
            } else {
                (body_head.clone(), b" ")
            };
            std::thread::spawn(move || trickle(&addr, &prefix, drip, Duration::from_millis(100)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let worst = (0..10).map(|_| timed_chat(&gw)).max().unwrap();
    assert!(
        worst < Duration::from_millis(1500),
        "a normal request took {worst:?} among slow clients"
    );
    for (i, t) in slow.into_iter().enumerate() {
        let (answer, took) = t.join().unwrap();
        // header_ms = 600, body_ms = 800: answered 408 and closed, not held for long.
        assert!(answer.starts_with("HTTP/1.1 408"), "slow client {i}: {answer}");
        let setting = if i % 2 == 0 { "request head" } else { "timeouts.body_ms" };
        assert!(answer.contains(setting), "slow client {i}: {answer}");
        assert!(took < Duration::from_secs(4), "slow client {i} held {took:?}");
    }
    still_serving(&gw);
}

#[test]
fn invalid_utf8_and_huge_numbers_are_clean_400s() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let bad_utf8 = b"{\"model\":\"openai/x\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\xc3\"}]}";
    for &(method, path) in JSON_ENTRY_POINTS {
        expect_shaped(path, &json_request(&gw, method, path, bad_utf8), 400);
        expect_shaped(path, &json_request(&gw, method, path, b"{\"model\":1e999}"), 400);
    }
    let huge = "184467440737095516160000";
    let cases: &[(&str, &str, String)] = &[
        (
            "POST",
            "/v1/messages",
            format!(r#"{{"model":"openai/x","max_tokens":{huge},"messages":[{{"role":"user","content":"hi"}}]}}"#),
        ),
        (
            "POST",
            "/v1/messages",
            r#"{"model":"openai/x","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}"#.to_owned(),
        ),
        (
            "PATCH",
            "/v1/memory/threads/t1/observations/config",
            format!(r#"{{"messageTokens":{huge}}}"#),
        ),
        ("GET", "/v1/memory/threads?limit=99999999999999999999999", String::new()),
        ("GET", "/v1/memory/threads/t1/messages?offset=-5", String::new()),
    ];
    for (method, path, body) in cases {
        let res = json_request(&gw, method, path, body.as_bytes());
        expect_shaped(path, &res, 400);
    }
    let far = json_request(
        &gw,
        "GET",
        "/v1/memory/threads/t1/messages?offset=18446744073709551615",
        b"",
    );
    assert_eq!(far.status, 200, "{}", far.text());
    // Passed through: the upstream judges its own fields. It answers, nothing breaks.
    let body = format!(r#"{{"model":"openai/x","max_tokens":{huge},"messages":[{{"role":"user","content":"hi"}}]}}"#);
    assert!(json_request(&gw, "POST", "/v1/chat/completions", body.as_bytes()).status < 500);
    still_serving(&gw);
}

#[test]
fn deeply_nested_json_is_a_400_on_every_entry_point() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let arrays = "[".repeat(100_000);
    let objects = format!(r#"{{"model":"openai/x","messages":{}"#, r#"{"a":"#.repeat(40_000));
    let closed = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    for &(method, path) in JSON_ENTRY_POINTS {
        for body in [&arrays, &objects, &closed] {
            expect_shaped(path, &json_request(&gw, method, path, body.as_bytes()), 400);
        }
    }
    still_serving(&gw);
}

#[test]
fn bodies_declared_as_anything_but_json_get_415() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let chat = json!({"model": "openai/x", "messages": [{"role": "user", "content": "What is 2+2? Reply with just the number."}]});
    let body = chat.to_string();
    let send = |path: &str, ct: Option<&str>, body: &[u8]| {
        let ct = ct.map_or(String::new(), |c| format!("content-type: {c}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{ct}connection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        exchange(&gw.addr, &[head.as_bytes(), body].concat(), Duration::from_secs(10)).response()
    };
    // The types a browser may send cross-origin without a preflight.
    for ct in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        for &(_, path) in &JSON_ENTRY_POINTS[..5] {
            expect_shaped(path, &send(path, Some(ct), body.as_bytes()), 415);
        }
    }
    let multipart = b"--x\r\ncontent-disposition: form-data; name=\"file\"\r\n\r\n{}\r\n--x--\r\n";
    expect_shaped(
        "/v1/embeddings",
        &send("/v1/embeddings", Some("multipart/form-data; boundary=x"), multipart),
        415,
    );
    // JSON under any of its names, or undeclared, is read.
    for ct in [
        None,
        Some("application/json; charset=utf-8"),
        Some("application/vnd.api+json"),
    ] {
        let res = send("/v1/chat/completions", ct, body.as_bytes());
        assert_eq!(res.status, 200, "{ct:?}: {}", res.text());
    }
    assert_eq!(mock.requests().len(), 3, "only the JSON bodies reached the upstream");
    still_serving(&gw);
}

#[test]
fn hostile_thread_ids_are_refused_and_never_touch_other_threads() {
    let mock = Mock::start("fixtures/memory");
    let gw = hostile_gateway(&mock);
    let victim = [("x-thread-id", "victim"), ("x-resource-id", "r1")];
    let chat = json!({"model": "openai/x", "messages": [{"role": "user", "content": "My name is Alex."}]});
    assert_eq!(gw.post("/v1/chat/completions", &victim, &chat).status, 200);
    let before = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(before["total"], 2, "{before}");

    for id in [
        "../victim",
        "victim/..",
        "./victim",
        "a/../victim",
        "..",
        "vic\ttim",
        " ",
    ] {
        let res = gw.post(
            "/v1/chat/completions",
            &[("x-thread-id", id), ("x-resource-id", "r1")],
            &chat,
        );
        res.expect_error(400, "invalid_request_error");
        let res = gw.post(
            "/v1/chat/completions",
            &[("x-thread-id", "t2"), ("x-resource-id", id)],
            &chat,
        );
        res.expect_error(400, "invalid_request_error");
    }
    for id in [
        "..%2Fvictim",
        "victim%2F..",
        "victim%00",
        "victim%0D%0Ax",
        "vic%7Ftim",
        "%2E%2E%2Fvictim",
    ] {
        for (method, rest) in [("GET", ""), ("DELETE", ""), ("GET", "/messages"), ("POST", "/messages")] {
            let body = json!({"messages": [{"role": "user", "content": "injected"}]}).to_string();
            let path = format!("/v1/memory/threads/{id}{rest}");
            json_request(&gw, method, &path, body.as_bytes()).expect_error(400, "invalid_request_error");
        }
    }
    let create = |id: &str| gw.post("/v1/memory/threads", &[], &json!({"id": id, "resourceId": "r1"}));
    create("../victim").expect_error(400, "invalid_request_error");
    create("victim\r\nx").expect_error(400, "invalid_request_error");
    // Control bytes that reach the head itself are refused by the parser, and the socket closed.
    // Non-ASCII made http-types panic (a dead process in the release build): a 400 now.
    for raw in ["victim\0", "victim\rx", "victim\r\n x", "vict\u{e9}m"] {
        let head = format!("GET /v1/memory/threads/victim/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-thread-id: {raw}\r\nx-resource-id: r1\r\n\r\n");
        let out = exchange(&gw.addr, head.as_bytes(), Duration::from_secs(5));
        assert!(out.closed);
        out.response().expect_error(400, "invalid_request_error");
    }

    let after = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(after, before, "the victim thread changed");
    let threads = gw.get("/v1/memory/threads", &[]).json();
    let ids: Vec<&str> = threads["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t1", "victim"], "{threads}");
    still_serving(&gw);
}

#[test]
fn crlf_and_nul_in_keys_never_reach_the_upstream_as_headers() {
    let mock = Mock::start("fixtures/openai");
    // Keys from the environment are where a stray CR/LF really happens (a pasted file, `$(…)`).
    let config = format!(
        "[providers.crlf]\nkind = \"openai\"\nbase_url = \"{0}/v1\"\napi_key_env = \"HOSTILE_CRLF_KEY\"\n\
         [providers.utf8]\nkind = \"openai\"\nbase_url = \"{0}/v1\"\napi_key_env = \"HOSTILE_UTF8_KEY\"\n{1}",
        mock.url,
        provider("openai", &mock, "")
    );
    let env = [
        ("HOSTILE_CRLF_KEY", "sk-a\r\nx-injected: yes"),
        ("HOSTILE_UTF8_KEY", "sk-é"),
    ];
    let gw = Gateway::start_in(&temp_dir("crlf"), &config, &env);
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "What is 2+2? Reply with just the number."}]});
    for model in ["crlf/x", "utf8/x"] {
        let e = gw
            .post("/v1/chat/completions", &[], &chat(model))
            .expect_error(502, "upstream_error");
        assert!(e["message"].as_str().unwrap().contains("provider key"), "{e}");
        assert!(
            !e["message"].as_str().unwrap().contains("sk-"),
            "a key leaked into an error: {e}"
        );
    }
    // A BYOK key is a client header: CR, LF and NUL in it are refused before anything is sent.
    for key in [
        "sk-a\rx-injected: yes",
        "sk-a\r\n x-injected: yes",
        "sk-a\0b",
        "sk-a\nx-injected: yes",
    ] {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        let out = exchange(&gw.addr, head.as_bytes(), Duration::from_secs(5));
        assert!(out.closed || out.response().status == 400, "{key:?}: {}", out.text());
        if out.closed && !out.bytes.is_empty() {
            out.response().expect_error(400, "invalid_request_error");
        }
    }
    let sent = mock.requests();
    assert!(sent.is_empty(), "the upstream received: {sent:?}");
    let res = gw.post("/v1/chat/completions", &[], &chat("openai/x"));
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(mock.requests().iter().all(|r| r["headers"].get("x-injected").is_none()));
    still_serving(&gw);
}

#[test]
fn thousands_of_idle_connections_do_not_starve_a_normal_request() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let started = Instant::now();
    let idle: Vec<_> = (0..3000)
        .map(|i| {
            // Paced: a burst beyond the listen backlog (128) waits out a 1 s SYN retry.
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut s = std::net::TcpStream::connect(&gw.addr).unwrap();
            // Some say nothing, some start a head and stop.
            if i % 3 == 0 {
                use std::io::Write;
                s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\n").unwrap();
            }
            s
        })
        .collect();
    let opened = started.elapsed();
    let worst = (0..5).map(|_| timed_chat(&gw)).max().unwrap();
    eprintln!("3000 idle connections opened in {opened:?}; worst normal request {worst:?}");
    assert!(
        worst < Duration::from_millis(1500),
        "{worst:?} with 3000 idle connections (opened in {opened:?})"
    );
    // keepalive_ms = 2000, header_ms = 600: all of them are let go, none leak.
    std::thread::sleep(Duration::from_millis(2500));
    let open = idle.iter().filter(|s| !peer_closed(s)).count();
    assert_eq!(open, 0, "{open} idle connections still held");
    still_serving(&gw);
}

#[test]
fn fuzzed_requests_always_get_an_answer_or_a_close() {
    let mock = Mock::start("fixtures/openai");
    let gw = hostile_gateway(&mock);
    let report = fuzz::run(&gw.addr);
    eprintln!("{report}");
    assert!(report.failures.is_empty(), "{report}\n{}", gw.log());
    still_serving(&gw);
}

/// A normal chat request, timed; it must succeed.
fn timed_chat(gw: &Gateway) -> Duration {
    let t = Instant::now();
    let body = json!({"model": "openai/x", "messages": [{"role": "user", "content": "What is 2+2? Reply with just the number."}]});
    let res = gw.post("/v1/chat/completions", &[], &body);
    assert_eq!(res.status, 200, "{}", res.text());
    t.elapsed()
}

/// The gateway still answers promptly and nothing on the way panicked.
fn still_serving(gw: &Gateway) {
    let took = timed_chat(gw);
    assert!(took < Duration::from_secs(2), "a normal request took {took:?}");
    assert_eq!(gw.get("/healthz", &[]).status, 200);
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A request with a JSON content type and this exact body.
fn json_request(gw: &Gateway, method: &str, path: &str, body: &[u8]) -> Resp {
    let with_body = !body.is_empty() || method != "GET";
    let len = if with_body {
        format!("content-length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{len}connection: close\r\n\r\n"
    );
    exchange(&gw.addr, &[head.as_bytes(), body].concat(), Duration::from_secs(10)).response()
}
