//! Gateway keys, BYOK, the CLI while the server runs, and restarts with the same data_dir.

mod common;

use common::*;
use serde_json::{json, Value};

fn ask() -> Value {
    json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+2? Reply with just the number."}]})
}

fn keys_config(mock: &Mock) -> String {
    format!("[auth]\nmode = \"keys\"\n{}", provider("openai", mock, ""))
}

fn create_key(gw: &Gateway, name: &str) -> String {
    let out = gw.cli(&["keys", "create", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.trim_end_matches('\n');
    assert!(!key.contains('\n'), "the key must be alone on stdout: {stdout:?}");
    assert!(
        key.starts_with("msk_") && key.len() >= 36 && key[4..].chars().all(|c| c.is_ascii_alphanumeric()),
        "{key}"
    );
    key.to_owned()
}

#[test]
fn keys_gate_requests_and_never_travel_upstream() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&keys_config(&mock));
    // The server holds the database: the CLI goes through its admin socket.
    let key = create_key(&gw, "alice");
    let bearer = format!("Bearer {key}");

    let e = gw
        .post("/v1/chat/completions", &[], &ask())
        .expect_error(401, "authentication_error");
    assert!(e["message"].as_str().unwrap().contains("memgate keys create"), "{e}");
    gw.post("/v1/chat/completions", &[("authorization", "Bearer msk_0000")], &ask())
        .expect_error(401, "authentication_error");
    gw.post(
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-not-a-gateway-key")],
        &ask(),
    )
    .expect_error(401, "authentication_error");
    gw.get("/v1/models", &[]).expect_error(401, "authentication_error");
    assert_eq!(gw.get("/healthz", &[]).status, 200, "health checks need no key");
    assert!(mock.requests().is_empty(), "rejected requests never reach the upstream");

    let res = gw.post("/v1/chat/completions", &[("authorization", &bearer)], &ask());
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last_header("authorization").as_deref(),
        Some("Bearer sk-configured-openai")
    );

    // BYOK: the gateway key rides in its own header, the provider key goes upstream.
    let res = gw.post(
        "/v1/chat/completions",
        &[
            ("x-memory-gateway-authorization", &bearer),
            ("authorization", "Bearer sk-user-own-key"),
        ],
        &ask(),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last_header("authorization").as_deref(),
        Some("Bearer sk-user-own-key")
    );
    for r in mock.requests() {
        assert!(
            !r["headers"].to_string().contains("msk_"),
            "a gateway key went upstream: {r}"
        );
    }
    gw.post(
        "/v1/chat/completions",
        &[
            ("x-memory-gateway-authorization", "Bearer msk_bad"),
            ("authorization", "Bearer sk-x"),
        ],
        &ask(),
    )
    .expect_error(401, "authentication_error");

    let list = String::from_utf8(gw.cli(&["keys", "list"]).stdout).unwrap();
    assert!(
        list.contains("alice") && list.contains("active") && !list.contains(&key),
        "{list}"
    );

    let out = gw.cli(&["keys", "revoke", "alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.post("/v1/chat/completions", &[("authorization", &bearer)], &ask())
        .expect_error(401, "authentication_error");
    assert!(String::from_utf8(gw.cli(&["keys", "list"]).stdout)
        .unwrap()
        .contains("revoked"));

    let log = gw.log();
    assert!(log.contains("POST /v1/chat/completions"), "one line per request: {log}");
    for secret in [key.as_str(), "sk-user-own-key", "sk-configured-openai"] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}

#[test]
fn keys_survive_restarts_and_work_whether_or_not_the_server_runs() {
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("restart");
    let gw = Gateway::start_in(&dir, &keys_config(&mock), &[]);
    let online = create_key(&gw, "made-online");
    let dir = gw.kill(); // SIGKILL: no clean shutdown.

    // No server: the CLI opens the database itself.
    let config = dir.join("memgate.toml");
    let out = std::process::Command::new(MEMGATE)
        .args(["keys", "create", "made-offline", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let gw = Gateway::start_in(&dir, &keys_config(&mock), &[]);
    for key in [&online, &offline] {
        let res = gw.post(
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {key}"))],
            &ask(),
        );
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let list = String::from_utf8(gw.cli(&["keys", "list"]).stdout).unwrap();
    assert!(list.contains("made-online") && list.contains("made-offline"), "{list}");
}

#[test]
fn open_mode_ignores_placeholders_but_honours_byok() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&provider("openai", &mock, ""));
    let res = gw.post("/v1/chat/completions", &[("authorization", "Bearer anything")], &ask());
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last_header("authorization").as_deref(),
        Some("Bearer sk-configured-openai")
    );
    let key = create_key(&gw, "bob");
    let res = gw.post(
        "/v1/chat/completions",
        &[
            ("x-memory-gateway-authorization", &format!("Bearer {key}")),
            ("authorization", "Bearer sk-bob"),
        ],
        &ask(),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.last_header("authorization").as_deref(), Some("Bearer sk-bob"));
}

fn memgate(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(MEMGATE);
    cmd.args(args).env_remove("MEMGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_contract() {
    let (ok, out, _) = memgate(&["--version"], &[]);
    assert!(
        ok && out.starts_with("memgate ") && out.contains(env!("CARGO_PKG_VERSION")),
        "{out}"
    );
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check-config", "--help"],
        &["keys", "--help"],
    ] {
        let (ok, out, _) = memgate(args, &[]);
        assert!(ok && out.contains("Usage"), "{args:?}: {out}");
    }
    let (ok, _, err) = memgate(&["frobnicate"], &[]);
    assert!(!ok && err.contains("unknown command"), "{err}");

    let dir = temp_dir("cli");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[providers.openai]\nkind = \"openai\"\napi_key = \"sk-very-secret-123\"\n",
    )
    .unwrap();
    let (ok, out, _) = memgate(&["check-config", "--config", good.to_str().unwrap()], &[]);
    assert!(
        ok && out.contains("[providers.openai]") && !out.contains("sk-very-secret-123"),
        "{out}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:4000\"\n\n[auth]\nmdoe = \"keys\"\n").unwrap();
    let (ok, _, err) = memgate(&["check-config", "--config", bad.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("mdoe") && err.contains("line 4"), "{err}");
    // $MEMGATE_CONFIG is the second place looked at.
    let (ok, _, err) = memgate(&["check-config"], &[("MEMGATE_CONFIG", bad.to_str().unwrap())]);
    assert!(!ok && err.contains("mdoe"), "{err}");

    // Zero-config: providers come from the environment, plus a local Ollama.
    let (ok, out, _) = memgate(
        &["check-config"],
        &[
            ("OPENAI_API_KEY", "sk-env"),
            ("ANTHROPIC_API_KEY", "x"),
            ("GEMINI_API_KEY", "y"),
        ],
    );
    if std::path::Path::new(memgate::config::SYSTEM_CONFIG).exists() {
        return; // A real install's config wins over defaults; the rest cannot be checked here.
    }
    assert!(ok, "{out}");
    for table in [
        "[providers.openai]",
        "[providers.anthropic]",
        "[providers.google]",
        "[providers.ollama]",
    ] {
        assert!(out.contains(table), "{table} missing: {out}");
    }

    // An open gateway on a LAN address is refused unless explicitly allowed.
    let open = dir.join("open.toml");
    std::fs::write(
        &open,
        format!(
            "listen = \"0.0.0.0:0\"\ndata_dir = {:?}\n[auth]\nmode = \"none\"\n",
            dir.join("d")
        ),
    )
    .unwrap();
    let (ok, _, err) = memgate(&["serve", "--config", open.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("allow_open_lan"), "{err}");
}

#[test]
fn a_lan_listener_requires_keys_by_default() {
    let mock = Mock::start("fixtures/openai");
    // No [auth] table: on a non-loopback address the default is keys.
    let gw = Gateway::start(&format!("listen = \"0.0.0.0:0\"\n{}", provider("openai", &mock, "")));
    let port = gw.addr.rsplit(':').next().unwrap().to_owned();
    let lan = format!("127.0.0.1:{port}");
    let body = ask().to_string();
    let denied = request(
        &lan,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer anything")],
        body.as_bytes(),
    );
    denied.expect_error(401, "authentication_error");
    let key = create_key(&gw, "lan-client");
    let ok = request(
        &lan,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        body.as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn a_gateway_key_is_never_taken_as_a_byok_key() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!("default_provider = \"openai\"\n{}", keys_config(&mock)));
    let key = create_key(&gw, "alice");
    let bearer = format!("Bearer {key}");
    // Its own key, or any other msk_ value, in the BYOK slot: refused before anything is sent.
    for byok in [bearer.as_str(), "Bearer msk_0123456789abcdef", "msk_x"] {
        let headers = [
            ("x-memory-gateway-authorization", bearer.as_str()),
            ("authorization", byok),
        ];
        let e = gw
            .post("/v1/chat/completions", &headers, &ask())
            .expect_error(400, "invalid_request_error");
        assert!(e["message"].as_str().unwrap().contains("gateway key"), "{e}");
        let res = gw.post(
            "/v1/messages",
            &headers,
            &json!({"model": "openai/gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(res.status, 400, "{}", res.text());
        assert_eq!(res.json()["type"], "error", "Anthropic's error shape: {}", res.text());
    }
    assert!(
        mock.requests().is_empty(),
        "nothing went upstream: {:?}",
        mock.requests()
    );
    assert!(!gw.log().contains(&key), "the key reached the log");
}
