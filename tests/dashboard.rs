//! The dashboard: the embedded files and their headers over HTTP, then the page itself driven in
//! headless Chromium (tests/ui/dashboard.mjs, playwright-core) against a gateway holding a few
//! threads stored through chat requests.
//!
//! The browser part needs Debian's `chromium`, node and `npm ci` in tests/ui; without them it
//! prints `skipped:` and passes, except under CI (where .ci/run installs them).

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const CSP: &str = "default-src 'self'";

fn keyed_gateway(mock: &Mock) -> Gateway {
    // A small message threshold, unbuffered, so exactly one observer run gives the page observations.
    Gateway::start(&format!(
        "default_provider = \"openai\"\n[auth]\nmode = \"keys\"\n[memory]\nmessage_tokens = 60\nbuffer_tokens = 0\n{}",
        provider("openai", mock, "")
    ))
}

#[test]
fn the_page_and_its_files_need_no_key_and_carry_a_strict_policy() {
    let mock = Mock::start("fixtures/memory");
    let gw = keyed_gateway(&mock);
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let res = gw.get(path, &[]);
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert!(
            res.header("content-type").unwrap().starts_with(kind),
            "{path}: {:?}",
            res.headers
        );
        let csp = res.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.starts_with(CSP) && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    }
    // No CDN: the page names only its own files; the script's one URL is the SVG namespace.
    let html = gw.get("/ui", &[]).text();
    for asset in ["/ui/app.js", "/ui/style.css", "/ui/icon.svg"] {
        assert!(html.contains(&format!("\"{asset}\"")), "{asset} not linked");
    }
    assert!(!html.contains("http") && !html.contains("<script>"), "{html}");
    assert!(!gw.get("/ui/style.css", &[]).text().contains("http"));
    let js = gw.get("/ui/app.js", &[]).text();
    assert_eq!(js.matches("http").count(), 1, "only the SVG namespace");
    assert!(js.contains("sessionStorage") && !js.contains("localStorage"));
    // The data behind the page still needs the key; the files take only GET.
    gw.get("/v1/memory/threads", &[])
        .expect_error(401, "authentication_error");
    request(&gw.addr, "POST", "/", &[], b"{}").expect_error(405, "invalid_request_error");
    gw.get("/ui/missing.js", &[]).expect_error(404, "invalid_request_error");
}

/// One chat turn on `thread` of `resource`, answered by the memory fixtures.
fn say(gw: &Gateway, auth: &str, thread: &str, resource: &str, messages: Value) {
    let res = gw.post(
        "/v1/chat/completions",
        &[
            ("authorization", auth),
            ("x-thread-id", thread),
            ("x-resource-id", resource),
        ],
        &json!({"model": "openai/gpt-4o-mini", "messages": messages}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Stores three threads through chat: alex-thread (user-42, observed once), sam-thread and
/// weather-thread (user-7, the latter with a tool call and its result); then 18 empty ones.
fn store_threads(gw: &Gateway, auth: &str) {
    for text in [
        "My name is Alex and I prefer concise answers.",
        "What is my name?",
        "Tell me something nice, number 1",
        "Tell me something nice, number 2",
    ] {
        say(gw, auth, "alex-thread", "user-42", user(text));
    }
    say(gw, auth, "sam-thread", "user-7", user("My name is Sam."));
    say(
        gw,
        auth,
        "weather-thread",
        "user-7",
        json!([
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\":18}"}
        ]),
    );
    // Enough more (through the memory API) for a second page of the list.
    for i in 0..18 {
        let res = gw.post(
            "/v1/memory/threads",
            &[("authorization", auth)],
            &json!({"id": format!("bulk-{i:02}"), "resourceId": "bulk"}),
        );
        assert_eq!(res.status, 201, "{}", res.text());
    }
    // The observer runs in the background: wait until it has written, and is done.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = gw
            .get(
                "/v1/memory/threads/alex-thread/observations/record",
                &[("authorization", auth)],
            )
            .json();
        if r["observerRuns"] == 1 && r["isObserving"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "no observer run: {r}\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the browser half needs, or why it cannot run.
fn browser_missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is missing".to_owned());
    }
    if !repo()
        .join("tests/ui/node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("playwright-core is missing (npm ci in tests/ui)".to_owned());
    }
    None
}

/// Runs `tests/ui/{script}` in headless Chromium against `gw` and asserts that all its checks
/// passed; false when the browser is missing (and this is not CI): the caller skips the rest.
fn run_in_browser(script: &str, gw: &Gateway, env: &[(&str, &str)]) -> bool {
    if let Some(why) = browser_missing() {
        assert!(
            std::env::var("CI").is_err(),
            "the browser test {script} cannot run under CI: {why} (.ci/run installs it)"
        );
        eprintln!("skipped: the browser test {script}: {why}");
        return false;
    }
    let out = Command::new("node")
        .arg(repo().join("tests/ui").join(script))
        .env("MEMGATE_URL", format!("http://{}", gw.addr))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
    eprintln!("{script}: {summary}");
    assert!(
        out.status.success() && summary.ends_with(" 0 failed"),
        "{script} failed:\n{stdout}\n{}\n--- gateway log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    true
}

#[test]
fn a_person_lists_opens_and_deletes_threads_in_the_browser() {
    let mock = Mock::start("fixtures/memory");
    let gw = keyed_gateway(&mock);
    let out = gw.cli(&["keys", "create", "dash"]);
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("msk_"), "{key:?}");
    let auth = format!("Bearer {key}");
    store_threads(&gw, &auth);

    // What the page reads: the API as any client sees it, and usage per day and hour.
    let list = gw.get("/v1/memory/threads", &[("authorization", &auth)]).json();
    assert_eq!(list["total"], 21, "{list}");
    let usage = gw
        .get("/v1/usage?group_by=day,model", &[("authorization", &auth)])
        .json();
    let row = &usage["data"][0];
    assert_eq!(row["model"], "openai/gpt-4o-mini", "{usage}");
    assert_eq!(row["day"].as_str().unwrap().len(), "2026-11-22".len(), "{usage}");
    assert!(row["memory_tokens"].as_u64().unwrap() > 0, "{usage}");
    let hours = gw.get("/v1/usage?group_by=hour", &[("authorization", &auth)]).json();
    assert!(
        hours["data"][0]["hour"].as_str().unwrap().ends_with(":00:00.000Z"),
        "{hours}"
    );

    let shots: PathBuf = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let env = [
        ("MEMGATE_KEY", key.as_str()),
        ("MEMGATE_SHOTS", shots.to_str().unwrap()),
    ];
    if !run_in_browser("dashboard.mjs", &gw, &env) {
        return;
    }
    // The page went through the API: what it deleted is gone for every client.
    let list = gw.get("/v1/memory/threads", &[("authorization", &auth)]).json();
    assert_eq!(list["total"], 18, "{list}");
    let gone = gw.get("/v1/memory/threads/alex-thread", &[("authorization", &auth)]);
    gone.expect_error(404, "invalid_request_error");
    let shot = shots.join("dashboard.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
    println!("screenshot: {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

/// The default: no keys on loopback. Pages on other origins (another port, another site, and a
/// DNS-rebinding name that makes the page same-origin) try to chat, write into memory, read the
/// threads and delete one; afterwards the server holds exactly what it held, and the gateway's
/// own dashboard still lists and deletes.
#[test]
fn pages_on_other_origins_cannot_chat_read_or_delete() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n{}",
        provider("openai", &mock, "")
    ));
    say(
        &gw,
        "",
        "victim",
        "user-42",
        user("My name is Alex and I prefer concise answers."),
    );
    let res = gw.post(
        "/v1/memory/threads",
        &[],
        &json!({"id": "doomed", "resourceId": "user-42"}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    mock.clear();
    let before = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(before["total"], 2, "{before}");

    if !run_in_browser("cross_origin.mjs", &gw, &[]) {
        return;
    }
    assert!(
        mock.requests().is_empty(),
        "an attack reached the upstream: {:?}",
        mock.requests()
    );
    let after = gw.get("/v1/memory/threads/victim/messages", &[]).json();
    assert_eq!(after, before, "an attack changed the victim's thread");
    let ids = gw.thread_ids(&[]);
    assert_eq!(ids, ["victim"], "planted, or not deleted by the dashboard");
    // Refused at the edge, as such: not lost in the browser on the way.
    let metrics = gw.get("/metrics", &[]).text();
    for reason in ["cross_origin", "misdirected_host"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("memgate_rejected_total{{reason=\"{reason}\"}}")));
        let n: u64 = line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0);
        assert!(n >= 3, "{reason}: {line:?}\n{metrics}");
    }
}
