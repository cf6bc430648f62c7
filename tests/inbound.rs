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
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
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
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{lengths}\r\n{CHAT}{smuggled}"
        );
        let e = refused(&gw, &raw, 400);
        assert!(e["message"].as_str().unwrap().contains("Content-Length"), "{e}");
    }
    assert!(mock.requests().is_empty(), "a refused request went upstream");
    // The same length twice is one length (RFC 9112 §6.3 lets a server accept it).
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
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
    let smuggled = "GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    let post = |te: &str, body: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{te}\r\n{body}{smuggled}")
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
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
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
    refused(
        &gw,
        "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nhost: 127.0.0.1\r\n\r\n",
        400,
    );
    // IPv4, IPv6 and names with ports are hosts.
    for host in ["127.0.0.1:4000", "[::1]:4000", "localhost", "[::1]"] {
        served(
            &gw,
            &format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
        );
    }
}

/// One request with these exact headers (and a JSON body when given), on its own connection.
fn raw(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {}\r\n", gw.addr));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    let out = exchange(
        &gw.addr,
        format!("{head}\r\n{body}").as_bytes(),
        Duration::from_secs(10),
    );
    out.response()
}

/// A victim's thread with two messages, stored through chat; returns the gateway and the mock.
fn open_gateway_with_a_thread(extra: &str) -> (Gateway, Mock) {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n{extra}\n{}",
        provider("openai", &mock, "")
    ));
    let h = [("x-thread-id", "victim"), ("x-resource-id", "r1")];
    let chat = json!({"model": "openai/x", "messages": [{"role": "user", "content": "My name is Alex."}]});
    assert_eq!(gw.post("/v1/chat/completions", &h, &chat).status, 200);
    mock.clear();
    (gw, mock)
}

/// After DNS rebinding a web page's own name points at 127.0.0.1: it reaches the gateway
/// same-origin, under its own name in Host. Open mode on loopback must not serve it.
#[test]
fn a_rebinding_host_is_misdirected_and_nothing_is_served() {
    let (gw, mock) = open_gateway_with_a_thread("[server]\nallowed_hosts = [\"gateway.lan\"]");
    let port = gw.addr.rsplit(':').next().unwrap().to_owned();
    let rebound = format!("attacker.example:{port}");
    let h = [("host", rebound.as_str())];
    let e = raw(&gw, "GET", "/v1/memory/threads", &h, "").expect_error(421, "invalid_request_error");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("allowed_hosts") && msg.contains("attacker.example"), "{e}");
    // A no-cors POST carries no Content-Type; it must not reach the upstream or memory.
    let mem = [
        ("host", rebound.as_str()),
        ("x-thread-id", "victim"),
        ("x-resource-id", "r1"),
    ];
    raw(&gw, "POST", "/v1/chat/completions", &mem, CHAT).expect_error(421, "invalid_request_error");
    raw(&gw, "DELETE", "/v1/memory/threads/victim", &h, "").expect_error(421, "invalid_request_error");
    raw(&gw, "GET", "/metrics", &h, "").expect_error(421, "invalid_request_error");
    raw(&gw, "GET", "/ui", &h, "").expect_error(421, "invalid_request_error");
    // Anthropic's clients read Anthropic's shape.
    let res = raw(&gw, "POST", "/v1/messages", &h, "{}");
    assert_eq!(res.status, 421, "{}", res.text());
    assert_eq!(res.json()["type"], "error", "{}", res.text());
    assert!(mock.requests().is_empty(), "a misdirected request went upstream");
    assert_eq!(gw.thread_ids(&[]), ["victim"]);
    let messages = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(messages["total"], 2, "{messages}");

    // Addresses, localhost and listed names are served; the port does not matter.
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        format!("dev.localhost:{port}"),
        format!("gateway.lan:{port}"),
        "GATEWAY.LAN".to_owned(),
        "10.1.2.3:80".to_owned(),
    ] {
        let res = raw(&gw, "GET", "/v1/memory/threads", &[("host", &host)], "");
        assert_eq!(res.status, 200, "{host}: {}", res.text());
    }
    for host in [
        "gateway.lan.attacker.example",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
    ] {
        let res = raw(&gw, "GET", "/healthz", &[("host", host)], "");
        assert_eq!(res.status, 421, "{host}: {}", res.text());
    }
}

/// A page on another origin: its fetches carry `Origin` (every POST, PATCH and DELETE, and
/// cross-origin GETs) and `Sec-Fetch-Site`. Refused with 403 before any route runs.
#[test]
fn requests_from_other_origins_are_refused_before_any_route() {
    let (gw, mock) = open_gateway_with_a_thread("[server]\nallowed_origins = [\"https://gateway.example\"]");
    let own = format!("http://{}", gw.addr);
    let port = gw.addr.rsplit(':').next().unwrap().to_owned();
    let other_port = format!("http://127.0.0.1:{}", port.parse::<u16>().unwrap() ^ 1);
    let localhost = format!("http://localhost:{port}");
    for origin in [
        "http://evil.example",
        "null",
        &other_port,
        &localhost,
        "https://gateway.example.evil",
    ] {
        let o = [("origin", origin)];
        let mem = [("origin", origin), ("x-thread-id", "t2"), ("x-resource-id", "r1")];
        // What `fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})` sends.
        let e = raw(&gw, "POST", "/v1/chat/completions", &mem, CHAT).expect_error(403, "permission_error");
        assert!(e["message"].as_str().unwrap().contains("allowed_origins"), "{e}");
        let create = r#"{"id":"planted","resourceId":"r1"}"#;
        raw(&gw, "POST", "/v1/memory/threads", &o, create).expect_error(403, "permission_error");
        raw(&gw, "DELETE", "/v1/memory/threads/victim", &o, "").expect_error(403, "permission_error");
        raw(&gw, "OPTIONS", "/v1/memory/threads/victim", &o, "").expect_error(403, "permission_error");
        raw(&gw, "GET", "/v1/memory/threads", &o, "").expect_error(403, "permission_error");
        raw(&gw, "GET", "/metrics", &o, "").expect_error(403, "permission_error");
        raw(&gw, "GET", "/healthz", &o, "").expect_error(403, "permission_error");
        let res = raw(&gw, "POST", "/v1/messages", &o, "{}");
        assert_eq!(
            (res.status, res.json()["error"]["type"].as_str()),
            (403, Some("permission_error"))
        );
    }
    // Without Origin (a GET), Sec-Fetch-Site still tells: only the gateway's own pages and
    // requests no page made (typed, bookmarked) are served. Another port is another origin.
    for site in ["cross-site", "same-site"] {
        let h = [("sec-fetch-site", site), ("sec-fetch-mode", "cors")];
        raw(&gw, "GET", "/v1/memory/threads", &h, "").expect_error(403, "permission_error");
        raw(&gw, "GET", "/v1/usage", &h, "").expect_error(403, "permission_error");
    }
    assert!(mock.requests().is_empty(), "a refused request went upstream");
    assert_eq!(gw.thread_ids(&[]), ["victim"], "a refused request changed memory");
    let messages = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(messages["total"], 2, "{messages}");
    let metrics = gw.get("/metrics", &[]).text();
    assert!(
        metrics.contains("memgate_rejected_total{reason=\"cross_origin\"}"),
        "{metrics}"
    );

    // The dashboard's own calls, a listed origin, and no browser at all are served.
    for h in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("origin", "https://gateway.example")],
        vec![("sec-fetch-site", "none")],
        vec![],
    ] {
        let res = raw(&gw, "POST", "/v1/memory/threads", &h, r#"{"resourceId":"r1"}"#);
        assert_eq!(res.status, 201, "{h:?}: {}", res.text());
    }
    // A link on another site may open the dashboard (a page, no data); its calls are then
    // same-origin.
    let nav = [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    assert_eq!(raw(&gw, "GET", "/ui", &nav, "").status, 200);
    raw(&gw, "GET", "/v1/memory/threads", &nav, "").expect_error(403, "permission_error");
}

/// The `memgate_*` sample lines of a scrape (no comments).
fn series(gw: &Gateway) -> Vec<String> {
    let text = gw.get("/metrics", &[]).text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `/metrics` needs no key, so whatever a label holds, anyone reads: ids of other tenants'
/// threads and resources must not be there, and junk paths must not grow the series.
#[test]
fn metrics_label_requests_by_route_template_never_by_id() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n[auth]\nmode = \"keys\"\n{}",
        provider("openai", &mock, "")
    ));
    let key = String::from_utf8(gw.cli(&["keys", "create", "a"]).stdout).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let junk = |round: usize| {
        for i in 0..20 {
            let n = round * 100 + i;
            // Without a key (401), with one (404, or a model's 200), and on no route at all.
            for (path, keyed) in [
                (format!("/v1/memory/resources/alice{n}@corp.example"), false),
                (format!("/v1/memory/threads/secret-thread-{n}"), true),
                (format!("/v1/memory/threads/secret-thread-{n}/messages"), false),
                (
                    format!("/v1/memory/threads/secret-thread-{n}/observations/record"),
                    true,
                ),
                (format!("/v1/memory/nowhere-{n}"), true),
                (format!("/v1/models/junk-model-{n}"), true),
                (format!("/junk-{n}/x"), false),
                (format!("/v1/junk-{n}"), true),
                (format!("/ui/junk-{n}.js"), false),
            ] {
                let h = [("authorization", auth.as_str())];
                gw.get(&path, if keyed { &h } else { &[] });
            }
            let res = request(&gw.addr, "DELETE", &format!("/v1/memory/resources/bob{n}"), &[], b"");
            assert_eq!(res.status, 401, "{}", res.text());
        }
    };
    // A scrape counts itself once it is answered: the first one adds the `/metrics` series.
    series(&gw);
    junk(0);
    let first = series(&gw);
    let text = first.join("\n");
    for leak in ["alice", "bob", "secret", "junk", "nowhere", "corp.example"] {
        assert!(!text.contains(leak), "/metrics holds {leak:?}:\n{text}");
    }
    for template in [
        "/v1/memory/resources/{id}",
        "/v1/memory/threads/{id}",
        "/v1/memory/threads/{id}/messages",
        "/v1/memory/threads/{id}/observations/record",
        "/v1/models/{id}",
        "other",
    ] {
        assert!(
            text.contains(&format!("route=\"{template}\"")),
            "no {template}:\n{text}"
        );
    }
    // Twenty more rounds of new ids and paths add no series.
    junk(1);
    let second = series(&gw);
    assert_eq!(first.len(), second.len(), "the series grew:\n{}", second.join("\n"));
}

/// The soft limit on open files of this process (the gateway it starts inherits it).
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// With no `[limits]` at all, a gateway still bounds its connections (4096) and the requests it
/// serves at once (1024): `check-config` prints them as in force, and the connection one past
/// the bound is answered 503 and closed.
#[test]
fn with_no_limits_configured_connections_and_requests_in_flight_are_bounded() {
    let mock = Mock::start("fixtures/openai");
    let gw = gateway(&mock);
    let out = gw.cli(&["check-config"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limits = printed
        .split("[limits]")
        .nth(1)
        .unwrap_or_else(|| panic!("no [limits]:\n{printed}"));
    assert!(
        limits.contains("max_connections = 4096") && limits.contains("max_in_flight = 1024"),
        "{printed}"
    );

    if open_file_limit() < 4096 + 512 {
        eprintln!(
            "skipped: 4,097 connections need more open files than `ulimit -n` = {}",
            open_file_limit()
        );
        return;
    }
    let held: Vec<_> = (0..4096)
        .map(|i| {
            // Paced: a burst beyond the listen backlog waits out a SYN retry.
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::net::TcpStream::connect(&gw.addr).unwrap()
        })
        .collect();
    let one_more = exchange(
        &gw.addr,
        b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(one_more.closed, "{}", one_more.text());
    let e = one_more.response().expect_error(503, "server_error");
    assert!(e["message"].as_str().unwrap().contains("max_connections"), "{e}");
    drop(held);
    // Their connections gone, others are served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.get("/healthz", &[]).status != 200 {
        assert!(std::time::Instant::now() < deadline, "still turned away");
        std::thread::sleep(Duration::from_millis(50));
    }
}
