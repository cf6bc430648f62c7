//! Hostile upstreams through the real binary: a scripted upstream (exact bytes on a raw socket)
//! sends heads with non-ASCII values, odd framing, endless SSE lines and huge bodies, and a
//! mock Gemini upstream receives hostile model names. The client must always get its answer or
//! a clean error, the gateway's memory must stay bounded, and the process must keep serving.

#[path = "hostile/fuzz.rs"]
#[allow(dead_code)] // Only the seeded generator is shared with the client-side fuzz.
mod client_fuzz;
mod common;
#[path = "upstream_hostile/fuzz.rs"]
mod fuzz;
#[path = "upstream_hostile/script.rs"]
mod script;
#[path = "hostile/wire.rs"]
#[allow(dead_code)]
mod wire;

use common::*;
use script::{chunked, endless_chunks, sized, Scripted};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

const CHAT_JSON: &str = "fixtures/openai/010_chat_two_plus_two/response.json";
const CHAT_SSE: &str = "fixtures/openai/041_chat_count_stream/response.sse";
const JSON_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json";
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream";

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(repo().join(path)).unwrap()
}

/// A gateway whose provider `up` (kind openai) is the scripted upstream.
fn gateway_for(up: &Scripted, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"up\"\n{extra}\n[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-up\"\n",
        up.url
    ))
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "up/x", "stream": stream, "messages": [{"role": "user", "content": "What is 2+2?"}]})
}

fn chat(gw: &Gateway) -> Resp {
    gw.post("/v1/chat/completions", &[], &chat_body(false))
}

/// The streamed answer's SSE payloads.
fn stream(gw: &Gateway) -> (u16, Vec<String>) {
    let mut s = Stream::open(&gw.addr, "/v1/chat/completions", &[], &chat_body(true));
    let status = s.status;
    (status, s.events().into_iter().map(|(_, _, d)| d).collect())
}

/// The process is alive (not a zombie), answers, and nothing panicked.
fn still_alive(gw: &Gateway) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap_or_default();
    let state = status
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("State: gone");
    assert!(
        !state.contains('Z') && !state.contains("gone"),
        "gateway died: {state}\n{}",
        gw.log()
    );
    assert_eq!(gw.get("/healthz", &[]).status, 200, "{}", gw.log());
    assert!(!gw.log().contains("panicked"), "{}", gw.log());
}

/// An answer the OpenAI decoder reads: `{"choices":[{"message":{"content":"4"}}]}` and more.
fn assert_four(res: &Resp) {
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["choices"][0]["message"]["content"], "4", "{}", res.text());
}

/// Answers request `hostile` with `bad`, every other one with a clean JSON answer.
fn one_hostile(hostile: usize, bad: Vec<u8>) -> Scripted {
    Scripted::start(move |i, _, s| {
        let bytes = if i == hostile {
            bad.clone()
        } else {
            sized(JSON_HEAD, &fixture(CHAT_JSON))
        };
        s.write_all(&bytes).is_ok()
    })
}

#[test]
fn non_ascii_in_a_json_answers_head_is_dropped_not_fatal() {
    let bad = sized(&format!("{JSON_HEAD}\r\nx-note: caf\u{e9}"), &fixture(CHAT_JSON));
    let up = one_hostile(0, bad);
    let gw = gateway_for(&up, "");
    assert_four(&chat(&gw));
    assert_four(&chat(&gw));
    still_alive(&gw);
}

#[test]
fn non_ascii_in_an_sse_answers_head_is_dropped_not_fatal() {
    let bad = chunked(&format!("{SSE_HEAD}\r\nx-note: caf\u{e9}"), &fixture(CHAT_SSE), 5, b"");
    let up = one_hostile(0, bad);
    let gw = gateway_for(&up, "");
    let (status, events) = stream(&gw);
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(events.len() > 3, "{events:?}");
    assert_four(&chat(&gw));
    still_alive(&gw);
}

#[test]
fn non_ascii_on_a_pooled_connections_second_answer_is_dropped_not_fatal() {
    let bad = sized(&format!("{JSON_HEAD}\r\nx-note: caf\u{e9}"), &fixture(CHAT_JSON));
    let up = one_hostile(1, bad);
    let gw = gateway_for(&up, "");
    assert_four(&chat(&gw));
    assert_four(&chat(&gw));
    let seen = up.seen();
    assert_eq!(
        seen[0].conn, seen[1].conn,
        "the second request did not reuse the connection"
    );
    assert_four(&chat(&gw));
    still_alive(&gw);
}

#[test]
fn a_non_ascii_trailer_after_a_chunked_body_is_discarded() {
    let trailers = "x-trailer: caf\u{e9}\r\nx-other: ok\r\n".as_bytes();
    let up = Scripted::start(move |i, _, s| {
        let bytes = match i {
            0 => chunked(JSON_HEAD, &fixture(CHAT_JSON), 3, trailers),
            1 => chunked(SSE_HEAD, &fixture(CHAT_SSE), 4, trailers),
            _ => sized(JSON_HEAD, &fixture(CHAT_JSON)),
        };
        s.write_all(&bytes).is_ok()
    });
    let gw = gateway_for(&up, "");
    assert_four(&chat(&gw));
    let (status, events) = stream(&gw);
    assert_eq!(
        (status, events.last().map(String::as_str)),
        (200, Some("[DONE]")),
        "{events:?}"
    );
    assert_four(&chat(&gw));
    // Trailers read to the end: all three went over one connection.
    assert!(up.seen().iter().all(|s| s.conn == 0), "{:?}", up.seen());
    still_alive(&gw);
}

#[test]
fn framing_an_upstream_gets_wrong_is_a_clean_502_and_close_framed_bodies_read_whole() {
    let body = fixture(CHAT_JSON);
    let len = body.len();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Close-framed (neither length nor chunked): read to the end, not read as empty.
        ([format!("{JSON_HEAD}\r\n\r\n").as_bytes(), &body].concat(), 200),
        // Length and chunked together: chunked wins (RFC 9112 6.3).
        (
            chunked(&format!("{JSON_HEAD}\r\ncontent-length: 5"), &body, 2, b""),
            200,
        ),
        // Interim 1xx answers are skipped.
        (
            [
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n".as_slice(),
                &sized(JSON_HEAD, &body),
            ]
            .concat(),
            200,
        ),
        (
            [
                format!("{JSON_HEAD}\r\ncontent-length: {len}\r\ncontent-length: 3\r\n\r\n").as_bytes(),
                &body,
            ]
            .concat(),
            502,
        ),
        (
            [format!("{JSON_HEAD}\r\ncontent-length: -1\r\n\r\n").as_bytes(), &body].concat(),
            502,
        ),
        (
            [
                format!("{JSON_HEAD}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").as_bytes(),
                &body,
            ]
            .concat(),
            502,
        ),
        // A head that never ends.
        (
            [JSON_HEAD.as_bytes(), &b"\r\nx-pad: aaaaaaaaaaaaaaaa".repeat(8000)].concat(),
            502,
        ),
        (b"HTTP/1.1 2000 Odd\r\n\r\n".to_vec(), 502),
    ];
    let answers: Vec<Vec<u8>> = cases.iter().map(|(b, _)| b.clone()).collect();
    let up = Scripted::start(move |i, _, s| {
        let _ = s.write_all(answers.get(i).map_or(&[][..], Vec::as_slice));
        false
    });
    // Retries on: a malformed answer was processed upstream, and must not be sent again.
    let gw = gateway_for(&up, "[retry]\nmax_attempts = 3\n");
    for (i, (_, want)) in cases.iter().enumerate() {
        let res = chat(&gw);
        if *want == 200 {
            assert_four(&res);
        } else {
            let e = res.expect_error(502, "upstream_error");
            assert_eq!(e["code"], "bad_response", "case {i}: {e}");
        }
        assert_eq!(
            up.seen().len(),
            i + 1,
            "case {i} was sent {} times",
            up.seen().len() - i
        );
    }
    still_alive(&gw);
}

/// The gateway's peak resident memory, in KiB.
fn peak_kib(gw: &Gateway) -> u64 {
    wire::peak_rss_kib(gw.pid())
}

#[test]
fn an_endless_sse_line_ends_the_stream_with_an_error_in_bounded_memory() {
    let up = Scripted::start(|i, _, s| {
        let head = format!("{SSE_HEAD}\r\ntransfer-encoding: chunked\r\n\r\n");
        if s.write_all(head.as_bytes()).is_err() {
            return false;
        }
        match i {
            // One `data:` line that never ends.
            0 => {
                let _ = s.write_all(b"6\r\ndata: \r\n");
                endless_chunks(s, b'a', 160 << 20);
            }
            // Endless short lines that never make up a whole event.
            _ => {
                let _ = s.write_all(b"6\r\ndata: \r\n");
                let lines = b"data: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n".repeat(600);
                let frame = [format!("{:x}\r\n", lines.len()).as_bytes(), &lines, b"\r\n"].concat();
                for _ in 0..3000 {
                    if s.write_all(&frame).is_err() {
                        break;
                    }
                }
            }
        }
        false
    });
    let gw = gateway_for(&up, "");
    let before = peak_kib(&gw);
    for case in ["one endless line", "an endless event"] {
        let (status, events) = stream(&gw);
        assert_eq!(status, 200, "{case}");
        let last = events.last().unwrap_or_else(|| panic!("{case}: no events"));
        assert_ne!(last, "[DONE]", "{case}: {events:?}");
        let e: Value = serde_json::from_str(last).unwrap();
        let msg = e["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("max_sse_event_bytes"), "{case}: {e}");
    }
    let grew = peak_kib(&gw) - before;
    eprintln!("peak RSS grew {grew} KiB over two 160 MiB-class SSE floods");
    assert!(grew < 24 << 10, "the gateway grew by {grew} KiB");
    still_alive(&gw);
}

#[test]
fn a_huge_upstream_body_is_a_502_in_bounded_memory() {
    let up = Scripted::start(|i, _, s| {
        let head = format!("{JSON_HEAD}\r\ntransfer-encoding: chunked\r\n\r\n");
        if i < 2 && s.write_all(head.as_bytes()).is_ok() {
            let _ = s.write_all(b"6\r\n{\"x\":\"\r\n");
            endless_chunks(s, b'a', 120 << 20);
        } else {
            // Declared past the bound: refused before any of it is read.
            let _ = s.write_all(format!("{JSON_HEAD}\r\ncontent-length: {}\r\n\r\n{{", 1u64 << 40).as_bytes());
        }
        false
    });
    let gw = gateway_for(&up, "[retry]\nmax_attempts = 1\n");
    let before = peak_kib(&gw);
    for _ in 0..3 {
        let e = chat(&gw).expect_error(502, "upstream_error");
        assert!(
            e["message"].as_str().unwrap().contains("max_upstream_body_bytes"),
            "{e}"
        );
    }
    let grew = peak_kib(&gw) - before;
    eprintln!("peak RSS grew {grew} KiB over two 120 MiB bodies (default 32 MiB bound)");
    assert!(grew < 56 << 10, "the gateway grew by {grew} KiB");
    still_alive(&gw);

    // The bound is configurable.
    let up = Scripted::start(|_, _, s| {
        let body = format!("{{\"pad\":\"{}\"}}", "a".repeat(2 << 20));
        s.write_all(&sized(JSON_HEAD, body.as_bytes())).is_ok()
    });
    let gw = gateway_for(&up, "[limits]\nmax_upstream_body_bytes = 1048576\n");
    let e = chat(&gw).expect_error(502, "upstream_error");
    assert!(e["message"].as_str().unwrap().contains("1048576"), "{e}");
    still_alive(&gw);
}

#[test]
fn model_names_stay_one_path_segment_under_gemini_models() {
    let mock = Mock::start("fixtures/gemini");
    let gw = Gateway::start(&format!(
        "[providers.google]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"gemini-operator-key\"\n",
        mock.url
    ));
    let hostile = [
        "google/../../v1beta/tunedModels#x",
        "google/..%2F..%2Fv1beta%2FtunedModels",
        "google/x?key=attacker",
        "google/models/../cachedContents",
        "google/..",
        "google/.",
        "google/models/..",
        "google/a b\u{e9}",
        "google/%2e%2e",
        "google/x:generateContent?alt=sse#",
    ];
    for model in hostile {
        for (path, body) in [
            (
                "/v1/chat/completions",
                json!({"model": model, "messages": [{"role": "user", "content": "Count from 1 to 5"}]}),
            ),
            (
                "/v1/chat/completions",
                json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Count from 1 to 5"}]}),
            ),
            ("/v1/embeddings", json!({"model": model, "input": "Text 1"})),
            ("/v1/embeddings", json!({"model": model, "input": ["Text 1", "Text 2"]})),
        ] {
            mock.clear();
            let res = gw.post(path, &[], &body);
            for r in mock.requests() {
                let got = r["path"].as_str().unwrap_or_default().to_owned();
                let rest = got
                    .strip_prefix("/v1beta/models/")
                    .unwrap_or_else(|| panic!("{model:?} on {path} reached {got:?}"));
                // One segment, even for a server that decodes it once before routing.
                let decoded = percent_decode(rest);
                assert!(!decoded.contains('/'), "{model:?} on {path} reached {got:?}");
                assert!(!matches!(rest, "." | ".."), "{model:?} on {path} reached {got:?}");
            }
            if res.status == 400 {
                res.expect_error(400, "invalid_request_error");
                assert!(mock.requests().is_empty(), "{model:?}: refused yet sent");
            }
        }
    }
    let ok = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "google/models/gemini-2.5-flash", "messages": [{"role": "user", "content": "Count from 1 to 5"}]}),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn fuzzed_upstream_answers_never_kill_the_gateway() {
    let report = fuzz::run();
    eprintln!("{report}");
    assert!(report.failures.is_empty(), "{report}");
}

#[test]
fn bodies_held_at_once_stay_within_the_buffer_budget() {
    // Request 0's answer sends 3 MiB and then waits; meanwhile request 1's 3 MiB cannot be
    // held too within a 4 MiB budget, however far both are under their own bound.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let up = Scripted::start(move |i, _, s| {
        let body = format!("{{\"pad\":\"{}\"}}", "a".repeat(3 << 20));
        if i == 0 {
            let bytes = sized(JSON_HEAD, body.as_bytes());
            let _ = s.write_all(&bytes[..bytes.len() - 2]);
            let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(20));
            let _ = s.write_all(&bytes[bytes.len() - 2..]);
            return false;
        }
        s.write_all(&sized(JSON_HEAD, body.as_bytes())).is_ok()
    });
    let gw = gateway_for(
        &up,
        "[retry]\nmax_attempts = 1\n[limits]\nmax_buffered_bytes = 4194304\n",
    );
    let addr = gw.addr.clone();
    let first = std::thread::spawn(move || {
        common::request(
            &addr,
            "POST",
            "/v1/chat/completions",
            &[],
            chat_body(false).to_string().as_bytes(),
        )
    });
    while up.seen().is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let e = chat(&gw).expect_error(503, "server_error");
    assert_eq!(e["code"], "overloaded", "{e}");
    assert!(e["message"].as_str().unwrap().contains("max_buffered_bytes"), "{e}");
    // A client body counts against the same budget: 2 MiB do not fit beside the 3 MiB held
    // (and are small enough that the gateway swallows the rest before it closes).
    let big = json!({"model": "up/x", "messages": [{"role": "user", "content": "b".repeat(2 << 20)}]});
    let e = gw
        .post("/v1/chat/completions", &[], &big)
        .expect_error(503, "server_error");
    assert!(e["message"].as_str().unwrap().contains("max_buffered_bytes"), "{e}");
    release.send(()).unwrap();
    // The first answer was held, not refused; once it is done, its bytes are free again.
    let first = first.join().unwrap();
    assert_ne!(first.status, 503, "{}", first.text());
    assert_eq!(chat(&gw).status, 200, "a 3 MiB answer fits again");
    still_alive(&gw);
}

#[test]
fn an_http_1_0_answer_is_read_until_close_and_never_retried() {
    // A simple local server (Python's http.server, a hand-made proxy) answers HTTP/1.0 and
    // frames the body by closing: no length, no chunks.
    let up = Scripted::start(|i, _, s| {
        let (head, body) = match i % 2 {
            0 => ("HTTP/1.0 200 OK\r\ncontent-type: application/json", fixture(CHAT_JSON)),
            _ => ("HTTP/1.0 200 OK\r\ncontent-type: text/event-stream", fixture(CHAT_SSE)),
        };
        let _ = s.write_all(&[format!("{head}\r\n\r\n").as_bytes(), &body].concat());
        false
    });
    let gw = gateway_for(&up, "");
    assert_four(&chat(&gw));
    assert_eq!(up.seen().len(), 1, "one answer, one request: {:?}", up.seen());
    let (status, events) = stream(&gw);
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert_eq!(up.seen().len(), 2);
    // Each on its own connection: an HTTP/1.0 answer's connection is never reused.
    assert_ne!(up.seen()[0].conn, up.seen()[1].conn);
    assert!(!gw.log().contains("attempt"), "{}", gw.log());
    // An answer that is not HTTP at all is the upstream's fault, and is not sent again either.
    let up = Scripted::start(|_, _, s| {
        let _ = s.write_all(b"HTTP/0.9 200 OK\r\n\r\nhello");
        false
    });
    let gw = gateway_for(&up, "");
    chat(&gw).expect_error(502, "upstream_error");
    assert_eq!(up.seen().len(), 1);
    still_alive(&gw);
}
