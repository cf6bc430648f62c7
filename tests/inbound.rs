//! What reaches the gateway before any route runs, through the real binary on raw sockets:
//! request framing a front proxy could read differently (request smuggling), `Host` headers that
//! would change the routed path, browsers on other origins (DNS rebinding, cross-site POSTs),
//! metrics labels a client could mint, and the default connection and request limits.

mod common;
// Shared with tests/hostile.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "hostile/wire.rs"]
mod wire;

use common::*;
use serde_json::json;
use std::time::Duration;
use wire::*;

const CHAT: &str =
    r#"{"model":"openai/x","messages":[{"role":"user","content":"What is 2+2? Reply with just the number."}]}"#;

fn gateway(mock: &Mock) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"openai\"\n{}",
        provider("openai", mock, "")
    ))
}

/// Sends `raw` and expects one refusal with `status` in OpenAI's shape, then a close: after a
/// head whose framing cannot be trusted, whatever follows on the connection is not a request.
fn refused(gw: &Gateway, raw: &str, status: u16) -> serde_json::Value {
    let out = exchange(&gw.addr, raw.as_bytes(), Duration::from_secs(5));
    assert!(out.closed, "{raw:?}: connection left open:\n{}", out.text());
    assert_eq!(
        out.text().matches("HTTP/1.1 ").count(),
        1,
        "{raw:?}: more than one answer (a smuggled request was served):\n{}",
        out.text()
    );
    let res = out.response();
    assert_eq!(res.status, status, "{raw:?}: {}", res.text());
    let e = res.json()["error"].clone();
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{raw:?}: {e}");
    e
}

/// Sends `raw` (which asks to close) and expects it served.
fn served(gw: &Gateway, raw: &str) {
    let res = exchange(&gw.addr, raw.as_bytes(), Duration::from_secs(10)).response();
    assert_eq!(res.status, 200, "{raw:?}: {}", res.text());
}

/// A request that hides a second one in its body, read differently by a proxy that takes the
/// first `Content-Length` and one that takes the last.
#[test]
fn conflicting_content_lengths_are_refused_and_the_connection_closed() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock);
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    let cases = [
        // A proxy taking the first reads an empty body and then `CHAT…` as the next request.
        format!("content-length: 0\r\ncontent-length: {}\r\n", CHAT.len()),
        format!("content-length: {}\r\ncontent-length: 0\r\n", CHAT.len()),
        format!(
            "Content-Length: {0}\r\nCONTENT-LENGTH: {1}\r\n",
            CHAT.len(),
            CHAT.len() + 1
        ),
        // Not 1*DIGIT: a strict proxy refuses it, a lax one may read it another way.
        format!("content-length: +{}\r\n", CHAT.len()),
    ];
    for lengths in cases {
        let raw = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{lengths}\r\n{CHAT}{smuggled}"
        );
        let e = refused(&gw, &raw, 400);
        assert!(e["message"].as_str().unwrap().contains("Content-Length"), "{e}");
    }
    assert!(mock.requests().is_empty(), "a refused request went upstream");
    // The same length twice is one length (RFC 9112 §6.3 lets a server accept it).
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {0}\r\ncontent-length: {0}\r\nconnection: close\r\n\r\n{CHAT}",
        CHAT.len()
    );
    served(&gw, &raw);
}

#[test]
fn transfer_codings_other_than_chunked_are_refused_and_the_connection_closed() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock);
    let chunked = format!("{:x}\r\n{CHAT}\r\n0\r\n\r\n", CHAT.len());
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n";
    let post = |te: &str, body: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{te}\r\n{body}{smuggled}")
    };
    // A coding memgate cannot decode, with chunked last: the length is known, the body is not.
    for te in [
        "transfer-encoding: gzip, chunked\r\n",
        "transfer-encoding: x-custom,chunked\r\n",
    ] {
        let e = refused(&gw, &post(te, &chunked), 501);
        assert!(e["message"].as_str().unwrap().contains("Transfer-Encoding"), "{e}");
    }
    // Chunked not last (or not at all), twice, empty or malformed: the body's end is unknown.
    for te in [
        "transfer-encoding: gzip\r\n",
        "transfer-encoding: identity\r\n",
        "transfer-encoding: chunked, gzip\r\n",
        "transfer-encoding: chunked, chunked\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n",
        "transfer-encoding: \r\n",
        "transfer-encoding: chunked;x=1\r\n",
        "transfer-encoding: chunk ed\r\n",
        // Both framings at once (RFC 9112 §6.1): a proxy may use either.
        "transfer-encoding: chunked\r\ncontent-length: 3\r\n",
    ] {
        let e = refused(&gw, &post(te, &chunked), 400);
        assert!(
            e["message"].as_str().unwrap().contains("Transfer-Encoding"),
            "{te:?}: {e}"
        );
    }
    assert!(mock.requests().is_empty(), "a refused request went upstream");
    // Plain chunked, in any case, still works.
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         Transfer-Encoding: Chunked\r\nconnection: close\r\n\r\n{chunked}"
    );
    served(&gw, &raw);
}

/// async-h1 builds the request URL as `http://{host}{path}`, so a `Host` holding `/`, `?`, `#`,
/// `@` or `\` changes the path that is routed: `GET /healthz` with `Host: x/v1/memory/threads?`
/// would list threads.
#[test]
fn a_host_that_would_change_the_routed_path_is_refused() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock);
    let res = gw.post("/v1/memory/threads", &[], &json!({"id": "t1", "resourceId": "r1"}));
    assert_eq!(res.status, 201, "{}", res.text());
    for host in [
        "x/v1/memory/threads?",
        "x/v1/models?",
        "127.0.0.1/v1/memory/threads#",
        "x?",
        "x#",
        "attacker@127.0.0.1",
        "x\\v1\\models?",
        "x y",
        "",
    ] {
        let raw = format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\n\r\n");
        let e = refused(&gw, &raw, 400);
        assert!(e["message"].as_str().unwrap().contains("Host"), "{host:?}: {e}");
    }
    // Two Host lines (RFC 9112 §3.2): which one names the target is anyone's guess.
    refused(&gw, "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nhost: x\r\n\r\n", 400);
    // IPv4, IPv6 and names with ports are hosts.
    for host in ["127.0.0.1:4000", "[::1]:4000", "localhost", "[::1]"] {
        served(
            &gw,
            &format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
        );
    }
}
