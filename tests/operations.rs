//! Operations through the real server: per-key rate limits and their headers, the global
//! in-flight limit, usage accounting (`GET /v1/usage`, `memgate usage`, memory's tokens apart)
//! and the Prometheus endpoint.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const INTRO: &str = "My name is Alex and I prefer concise answers.";

fn keyed(mock: &Mock, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"openai\"\n[auth]\nmode = \"keys\"\n{extra}\n{}",
        provider("openai", mock, "")
    ))
}

fn key(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(&[&["keys", "create"], args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn chat(gw: &Gateway, key: &str, body: Value) -> Resp {
    let auth = format!("Bearer {key}");
    gw.post("/v1/chat/completions", &[("authorization", &auth)], &body)
}

fn count(user: &str, tags: Value) -> Value {
    json!({"model": "openai/gpt-4o-mini", "user": user, "tags": tags,
        "messages": [{"role": "user", "content": "Count from 1 to 5"}]})
}

#[test]
fn per_key_limits_answer_429_with_headers_and_retry_after() {
    let mock = Mock::start("fixtures/openai");
    let gw = keyed(&mock, "[limits]\nrpm = 1000\n");
    let limited = key(&gw, &["limited", "--rpm", "2"]);
    let roomy = key(&gw, &["roomy"]);
    for left in ["1", "0"] {
        let r = chat(&gw, &limited, count("u", json!([])));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
        assert!(r.header("x-ratelimit-reset").is_some());
    }
    let r = chat(&gw, &limited, count("u", json!([])));
    let e = r.expect_error(429, "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "retry-after {wait}");
    assert_eq!(mock.requests().len(), 2, "a refused request never reaches the upstream");
    // Another key has its own bucket, with the config's default limit.
    let r = chat(&gw, &roomy, count("u", json!([])));
    assert_eq!((r.status, r.header("x-ratelimit-limit")), (200, Some("1000")));

    // Tokens per minute: one answer's tokens use the budget up.
    let thrifty = key(&gw, &["thrifty", "--tpm", "10"]);
    assert_eq!(chat(&gw, &thrifty, count("u", json!([]))).status, 200);
    let r = chat(&gw, &thrifty, count("u", json!([])));
    let e = r.expect_error(429, "rate_limit_error");
    assert!(e["message"].as_str().unwrap().contains("tokens per minute"), "{e}");
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    let out = gw.cli(&["keys", "create", "bad", "--rpm", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn beyond_max_in_flight_requests_get_a_fast_503() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!(
        "[limits]\nmax_in_flight = 1\n{}",
        provider("openai", &mock, "")
    ));
    let mut slow = Stream::open(
        &gw.addr,
        "/v1/chat/completions",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "memgate-test: slow stream"}]}),
    );
    assert_eq!(slow.status, 200);
    let started = Instant::now();
    let r = gw.post("/v1/chat/completions", &[], &count("u", json!([])));
    let e = r.expect_error(503, "server_error");
    assert_eq!(e["code"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not queued behind the stream"
    );
    assert_eq!(gw.get("/healthz", &[]).status, 200, "probes are still answered");
    assert!(slow.events().iter().any(|e| e.2 == "[DONE]"));
    assert_eq!(gw.post("/v1/chat/completions", &[], &count("u", json!([]))).status, 200);
}

#[test]
fn usage_is_counted_per_key_model_user_and_tags_and_each_key_sees_its_own() {
    let mock = Mock::start("fixtures/openai");
    let gw = keyed(&mock, "");
    let (alice, bob) = (key(&gw, &["alice"]), key(&gw, &["bob"]));
    for tags in [json!(["b", "a"]), json!(["a", "b"]), json!([])] {
        assert_eq!(chat(&gw, &alice, count("ann", tags)).status, 200);
    }
    assert_eq!(chat(&gw, &bob, count("bo", json!([]))).status, 200);
    assert!(
        mock.last_body().get("tags").is_none(),
        "tags are memgate's, not the upstream's"
    );
    let report = |k: &str, q: &str| {
        let auth = format!("Bearer {k}");
        let r = gw.get(&format!("/v1/usage{q}"), &[("authorization", &auth)]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].as_array().unwrap().clone()
    };
    let rows = report(&alice, "?group_by=key,provider,model,user,tags");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let tagged = rows.iter().find(|r| r["tags"] == "a,b").unwrap();
    assert_eq!(
        (&tagged["key"], &tagged["provider"], &tagged["model"], &tagged["user"]),
        (
            &json!("alice"),
            &json!("openai"),
            &json!("openai/gpt-4o-mini"),
            &json!("ann")
        )
    );
    assert_eq!(tagged["requests"], 2);
    // The fixture's usage: 18 prompt + 9 completion tokens a request.
    assert_eq!(
        (
            &tagged["prompt_tokens"],
            &tagged["completion_tokens"],
            &tagged["total_tokens"]
        ),
        (&json!(36), &json!(18), &json!(54))
    );
    let by_key = report(&alice, "");
    assert_eq!(by_key.len(), 1);
    assert_eq!(
        (&by_key[0]["key"], &by_key[0]["requests"]),
        (&json!("alice"), &json!(3))
    );
    let theirs = report(&bob, "");
    assert_eq!((theirs.len(), &theirs[0]["key"]), (1, &json!("bob")));
    assert!(report(&alice, "?from=2999-01-01").is_empty());
    let auth = format!("Bearer {alice}");
    gw.get("/v1/usage?group_by=color", &[("authorization", &auth)])
        .expect_error(400, "invalid_request_error");
    gw.get("/v1/usage?from=yesterday", &[("authorization", &auth)])
        .expect_error(400, "invalid_request_error");

    // The CLI sees every key, through the running server.
    std::thread::sleep(usage_flush());
    let out = gw.cli(&["usage", "--group-by", "key"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = |k: &str| text.lines().find(|l| l.starts_with(k)).unwrap_or_default().to_owned();
    assert!(line("alice").split_whitespace().nth(1) == Some("3"), "{text}");
    assert!(line("bob").split_whitespace().nth(1) == Some("1"), "{text}");
}

/// A little over how often counts reach the database.
fn usage_flush() -> Duration {
    Duration::from_millis(2300)
}

#[test]
fn memorys_own_tokens_are_counted_apart() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n[memory]\nmessage_tokens = 60\n{}",
        provider("openai", &mock, "")
    ));
    let h = [("x-thread-id", "t1"), ("x-resource-id", "alex")];
    let say = |text: &str| {
        let body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]});
        assert_eq!(gw.post("/v1/chat/completions", &h, &body).status, 200);
    };
    say(INTRO);
    for i in 0..3 {
        say(&format!("Tell me something nice, number {i}"));
    }
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = gw.get("/v1/usage?group_by=key", &[]).json()["data"].clone();
        let row = &rows[0];
        if row["memory_tokens"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(row["requests"], 4, "memory's calls are not requests: {row}");
            break;
        }
        assert!(Instant::now() < until, "no memory tokens counted: {rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_are_served_in_prometheus_text_format() {
    let mock = Mock::start("fixtures/openai");
    let gw = keyed(&mock, "");
    let k = key(&gw, &["scraper"]);
    assert_eq!(chat(&gw, &k, count("u", json!([]))).status, 200);
    chat(&gw, &k, json!({"model": "nosuch/x", "messages": []}));
    let r = gw.get("/metrics", &[]);
    assert_eq!(r.status, 200, "no key needed by default");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for want in [
        r#"memgate_requests_total{route="/v1/chat/completions",model="openai/gpt-4o-mini",status="200"} 1"#,
        r#"memgate_requests_total{route="/v1/chat/completions",model="-",status="400"} 1"#,
        r#"memgate_request_duration_seconds_count{route="/v1/chat/completions"} 2"#,
        r#"memgate_upstream_duration_seconds_count{provider="openai"} 1"#,
        r#"memgate_tokens_total{model="openai/gpt-4o-mini",kind="prompt"} 18"#,
        "# TYPE memgate_in_flight_requests gauge",
        "memgate_fallbacks_total 0",
        r#"memgate_memory_runs_total{job="observer",outcome="ok"} 0"#,
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    let db: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("memgate_db_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(db > 0);

    let locked = keyed(&mock, "[metrics]\nrequire_key = true\n");
    locked.get("/metrics", &[]).expect_error(401, "authentication_error");
    let k = key(&locked, &["scraper"]);
    let auth = format!("Bearer {k}");
    assert_eq!(locked.get("/metrics", &[("authorization", &auth)]).status, 200);
}

#[test]
fn beyond_max_connections_a_new_connection_gets_503_and_a_close() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!(
        "[limits]\nmax_connections = 2\n{}",
        provider("openai", &mock, "")
    ));
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&gw.addr).unwrap())
        .collect();
    // The accept loop sees the held ones before the next.
    std::thread::sleep(Duration::from_millis(200));
    let r = gw.get("/healthz", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    let until = Instant::now() + Duration::from_secs(5);
    while gw.get("/healthz", &[]).status != 200 {
        assert!(Instant::now() < until, "the freed connections were not counted off");
        std::thread::sleep(Duration::from_millis(50));
    }
}
