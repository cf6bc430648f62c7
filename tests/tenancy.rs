//! Tenants: every key is its own tenant, by an immutable tenant id (not its name), so thread ids,
//! observations and usage never cross keys; a database written before tenant ids is migrated in
//! place at open.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

const INTRO: &str = "My name is Alex and I prefer concise answers.";
const QUESTION: &str = "What is my name?";

fn keys_config(mock: &Mock, extra: &str) -> String {
    format!(
        "default_provider = \"openai\"\n[auth]\nmode = \"keys\"\n{extra}\n{}",
        provider("openai", mock, "")
    )
}

fn create_key(gw: &Gateway, name: &str) -> String {
    let out = gw.cli(&["keys", "create", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim())
}

/// One chat turn on `thread` of `resource` as `auth`; returns the answer's text.
fn say(gw: &Gateway, auth: &str, thread: &str, resource: &str, text: &str) -> String {
    let res = gw.post(
        "/v1/chat/completions",
        &[
            ("authorization", auth),
            ("x-thread-id", thread),
            ("x-resource-id", resource),
        ],
        &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The ids of the caller's threads, oldest first.
fn thread_ids(gw: &Gateway, auth: &str) -> Vec<String> {
    let res = gw.get("/v1/memory/threads", &[("authorization", auth)]);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

fn message_texts(gw: &Gateway, auth: &str, thread: &str) -> Vec<String> {
    let res = gw.get(
        &format!("/v1/memory/threads/{thread}/messages?limit=1000"),
        &[("authorization", auth)],
    );
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The caller's usage rows as (key, requests, memory_tokens).
fn usage(gw: &Gateway, auth: &str) -> Vec<(String, u64, u64)> {
    let res = gw.get("/v1/usage", &[("authorization", auth)]);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["requests"].as_u64().unwrap(),
                r["memory_tokens"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_same_thread_id_under_two_keys_is_two_threads() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&keys_config(&mock, ""));
    let (a, b) = (create_key(&gw, "team-a"), create_key(&gw, "team-b"));
    assert!(say(&gw, &a, "t1", "alex", INTRO).starts_with("Nice to meet you"));
    // No oracle: B creates the id A holds as its own thread.
    let created = gw.post(
        "/v1/memory/threads",
        &[("authorization", &b)],
        &json!({"id": "t1", "resourceId": "other"}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    // Within B, the usual binding rules hold: a taken id is 409, another resource 404.
    let again = gw.post(
        "/v1/memory/threads",
        &[("authorization", &b)],
        &json!({"id": "t1", "resourceId": "other"}),
    );
    again.expect_error(409, "invalid_request_error");
    assert_eq!(say(&gw, &b, "t1", "other", QUESTION), "I don't know your name yet.");
    // No squatting: A's thread goes on as before.
    assert_eq!(say(&gw, &a, "t1", "alex", QUESTION), "Your name is Alex.");
    assert_eq!(message_texts(&gw, &a, "t1").len(), 4);
    assert_eq!(message_texts(&gw, &b, "t1"), [QUESTION, "I don't know your name yet."]);
    // B deleting its t1 leaves A's.
    let del = request(
        &gw.addr,
        "DELETE",
        "/v1/memory/threads/t1",
        &[("authorization", &b)],
        b"",
    );
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(thread_ids(&gw, &b), Vec::<String>::new());
    assert_eq!(thread_ids(&gw, &a), ["t1"]);
    assert_eq!(message_texts(&gw, &a, "t1").len(), 4);
}

#[test]
fn a_new_key_with_a_revoked_keys_name_starts_empty() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&keys_config(&mock, ""));
    let old = create_key(&gw, "alice");
    say(&gw, &old, "t1", "alex", INTRO);
    let out = gw.cli(&["keys", "revoke", "alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new = create_key(&gw, "alice");
    assert_eq!(thread_ids(&gw, &new), Vec::<String>::new());
    assert_eq!(usage(&gw, &new), []);
    // Its own t1 is a new thread, knowing nothing of the old one.
    assert_eq!(say(&gw, &new, "t1", "alex", QUESTION), "I don't know your name yet.");
    // The CLI resolves a name to its current key; the old tenant's threads are listed apart.
    let list = String::from_utf8(gw.cli(&["threads", "list", "--tenant", "alice"]).stdout).unwrap();
    assert_eq!(list.lines().filter(|l| l.starts_with("t1 ")).count(), 1, "{list}");
    let all = String::from_utf8(gw.cli(&["threads", "list"]).stdout).unwrap();
    assert_eq!(all.lines().filter(|l| l.starts_with("t1 ")).count(), 2, "{all}");
    assert!(all.contains("alice(revoked"), "{all}");
    // One id, two tenants: the CLI asks which.
    let out = gw.cli(&["threads", "show", "t1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --tenant"), "{out:?}");
    let show = String::from_utf8(gw.cli(&["threads", "show", "t1", "--tenant", "alice"]).stdout).unwrap();
    assert!(show.contains(QUESTION) && !show.contains(INTRO), "{show}");
    // `default` names open mode's tenant: no key may take it.
    let out = gw.cli(&["keys", "create", "default"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("open mode"));
}

/// Copies the database written by the version before tenant ids into a fresh data_dir.
fn v0_database(dir: &Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        repo().join("fixtures/db/v0-3fa8666.redb"),
        dir.join("data/memgate.redb"),
    )
    .unwrap();
    std::fs::read_to_string(repo().join("fixtures/db/v0-3fa8666.keys"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_lowercase(), format!("Bearer {v}")))
        .collect()
}

#[test]
fn a_database_of_the_previous_version_is_migrated_in_place() {
    let mock = Mock::start("fixtures/memory");
    let dir = temp_dir("v0");
    let keys = v0_database(&dir);
    let key = |name: &str| keys.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let (alice, bob, carol) = (key("alice"), key("bob"), key("carol"));
    for round in 0..2 {
        // The second start finds the database migrated already: nothing changes.
        let gw = Gateway::start_in(&dir, &keys_config(&mock, ""), &[]);
        assert!(gw.log().contains("migrat") == (round == 0), "{}", gw.log());
        assert_eq!(thread_ids(&gw, &alice), ["shared-id", "alice-2"]);
        assert_eq!(thread_ids(&gw, &bob), ["shared-id-b", "bob-2"]);
        assert_eq!(message_texts(&gw, &alice, "shared-id").len(), 8);
        assert_eq!(
            message_texts(&gw, &bob, "shared-id-b"),
            ["My name is Bob.", "Nice to meet you! I'll keep answers short."]
        );
        let obs = gw.get(
            "/v1/memory/threads/shared-id/observations",
            &[("authorization", &alice)],
        );
        assert!(obs.text().contains("User stated their name is Alex."), "{}", obs.text());
        let record: Value = gw
            .get(
                "/v1/memory/threads/shared-id/observations/record",
                &[("authorization", &alice)],
            )
            .json();
        assert_eq!(record["observerRuns"], 1, "{record}");
        assert_eq!(usage(&gw, &alice), [("alice".to_owned(), 5, 660)]);
        assert_eq!(usage(&gw, &bob), [("bob".to_owned(), 2, 0)]);
        // bob's own rate limit survived.
        let res = gw.get("/v1/models", &[("authorization", &bob)]);
        assert_eq!(res.header("x-ratelimit-limit-tokens"), Some("100000"));
        gw.get("/v1/memory/threads", &[("authorization", &carol)])
            .expect_error(401, "authentication_error");
        if round == 0 {
            let carol2 = create_key(&gw, "carol");
            assert_eq!(thread_ids(&gw, &carol2), Vec::<String>::new());
            assert_eq!(usage(&gw, &carol2), []);
            let list = String::from_utf8(gw.cli(&["keys", "list"]).stdout).unwrap();
            assert!(list.contains("alice") && list.contains("carol"), "{list}");
        }
        let all = String::from_utf8(gw.cli(&["threads", "list"]).stdout).unwrap();
        assert!(all.contains("carol-1") && all.contains("carol(revoked"), "{all}");
        let usage_all = String::from_utf8(gw.cli(&["usage"]).stdout).unwrap();
        assert!(usage_all.contains("default "), "open mode's usage: {usage_all}");
        drop(gw);
    }
    // Open mode's tenant kept its thread, and sees no key's.
    let open = Gateway::start_in(
        &dir,
        &format!("default_provider = \"openai\"\n{}", provider("openai", &mock, "")),
        &[],
    );
    let ids: Vec<String> = open.get("/v1/memory/threads", &[]).json()["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["open-1"]);
}

/// Keys mode in front of `openai` (fixtures/openai) and `anthropic` (fixtures/anthropic), each
/// with its configured key; returns the gateway key's header.
fn two_providers(openai: &Mock, anthropic: &Mock) -> (Gateway, String) {
    let gw = Gateway::start(&format!(
        "[auth]\nmode = \"keys\"\n[retry]\nmax_attempts = 1\n{}[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-configured\"\n",
        provider("openai", openai, ""),
        anthropic.url
    ));
    let key = create_key(&gw, "byok-user");
    (gw, key)
}

/// Every header value each request to `mock` carried, as one string per request.
fn headers_seen(mock: &Mock) -> Vec<String> {
    mock.requests().iter().map(|r| r["headers"].to_string()).collect()
}

#[test]
fn a_byok_key_goes_only_to_the_provider_of_the_model_asked_for() {
    let (openai, anthropic) = (Mock::start("fixtures/openai"), Mock::start("fixtures/anthropic"));
    let (gw, key) = two_providers(&openai, &anthropic);
    let byok = [
        ("x-memory-gateway-authorization", key.as_str()),
        ("authorization", "Bearer sk-user-own"),
    ];
    let ask = |text: &str, extra: Value| {
        let mut body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        gw.post("/v1/chat/completions", &byok, &body)
    };
    // openai is down: the fallback on anthropic answers, with the operator's anthropic key.
    let r = ask("memgate-test: down", json!({"models": ["anthropic/claude-sonnet-4"]}));
    assert_eq!(r.json()["model"], "anthropic/claude-sonnet-4", "{}", r.text());
    assert_eq!(
        openai.last_header("authorization").as_deref(),
        Some("Bearer sk-user-own")
    );
    assert_eq!(anthropic.last_header("x-api-key").as_deref(), Some("sk-ant-configured"));
    // `order` putting another provider first: that one gets its configured key too.
    let r = ask(
        "memgate-test: down",
        json!({"providerOptions": {"gateway": {"order": ["anthropic", "openai"]}}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(anthropic.requests().len(), 2);
    for seen in headers_seen(&anthropic) {
        assert!(
            !seen.contains("sk-user-own"),
            "the BYOK key reached another provider: {seen}"
        );
    }
}

#[test]
fn memory_model_calls_never_carry_a_byok_key() {
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&keys_config(&mock, "[memory]\nmessage_tokens = 60"));
    let key = create_key(&gw, "byok-user");
    let byok = [
        ("x-memory-gateway-authorization", key.as_str()),
        ("authorization", "Bearer sk-user-own"),
        ("x-thread-id", "t1"),
        ("x-resource-id", "alex"),
    ];
    let chat = |text: &str| {
        let r = gw.post(
            "/v1/chat/completions",
            &byok,
            &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": text}]}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    chat(INTRO);
    for i in 0..3 {
        chat(&format!("Tell me something nice, number {i}"));
    }
    let observer_call = || {
        mock.requests()
            .into_iter()
            .find(|r| r["body"].as_str().unwrap_or_default().contains("You are the observer"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let call = loop {
        if let Some(c) = observer_call() {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no observer call: {}", gw.log());
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    assert_eq!(
        call["headers"]["authorization"], "Bearer sk-configured-openai",
        "{call}"
    );
    // The chat turns themselves carried the caller's key.
    let chats = headers_seen(&mock).iter().filter(|h| h.contains("sk-user-own")).count();
    assert_eq!(chats, 4);
}

#[test]
fn memory_model_tokens_are_charged_to_the_keys_token_limit() {
    const TPM: u64 = 6000;
    let mock = Mock::start("fixtures/memory");
    let gw = Gateway::start(&keys_config(&mock, "[memory]\nmessage_tokens = 60"));
    let out = gw.cli(&["keys", "create", "small", "--tpm", &TPM.to_string()]);
    let key = format!("Bearer {}", String::from_utf8(out.stdout).unwrap().trim());
    let started = std::time::Instant::now();
    for text in [
        INTRO,
        "Tell me something nice, number 0",
        "Tell me something nice, number 1",
    ] {
        say(&gw, &key, "t1", "alex", text);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = gw
            .get("/v1/memory/threads/t1/observations/record", &[("authorization", &key)])
            .json();
        if r["observerRuns"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no observer run: {r}\n{}",
            gw.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let res = gw.get("/v1/usage", &[("authorization", &key)]);
    let row = &res.json()["data"][0];
    let (chat, memory) = (
        row["total_tokens"].as_u64().unwrap(),
        row["memory_tokens"].as_u64().unwrap(),
    );
    assert!(memory > 300, "the observer spent tokens: {row}");
    let left: u64 = res.header("x-ratelimit-remaining-tokens").unwrap().parse().unwrap();
    // The bucket refills TPM/60 a second: allow what refilled since the first request, so a
    // slow machine cannot fail this, while 300+ uncharged memory tokens still would.
    let refilled = (TPM as f64 / 60.0 * started.elapsed().as_secs_f64()).ceil() as u64;
    assert!(
        left + chat + memory <= TPM + refilled + 50,
        "{left} tokens left of {TPM} after {chat} chat and {memory} memory tokens ({refilled} refilled)"
    );
}

#[test]
fn stored_responses_are_reachable_only_with_the_callers_own_provider_key() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&keys_config(&mock, ""));
    let key = create_key(&gw, "alice");
    let byok = [
        ("x-memory-gateway-authorization", key.as_str()),
        ("authorization", "Bearer sk-user-own"),
    ];
    let ask = |headers: &[(&str, &str)], field: &str| {
        let mut body = json!({"model": "openai/gpt-4o-mini", "input": "What did I say?"});
        body[field] = json!("resp_someone_elses");
        gw.post("/v1/responses", headers, &body)
    };
    for field in ["previous_response_id", "conversation"] {
        // The operator's shared key would read any tenant's stored responses.
        let e = ask(&[("authorization", &key)], field).expect_error(400, "invalid_request_error");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(field) && m.contains("your own provider key"), "{m}");
        // With memory, the history would go twice.
        let mut with_memory = byok.to_vec();
        with_memory.extend([("x-thread-id", "t1"), ("x-resource-id", "alex")]);
        let e = ask(&with_memory, field).expect_error(400, "invalid_request_error");
        assert!(e["message"].as_str().unwrap().contains("x-thread-id"), "{e}");
    }
    assert!(mock.requests().is_empty(), "nothing went upstream");
    // BYOK: the caller reads its own stored responses, under its own key.
    ask(&byok, "previous_response_id");
    assert_eq!(mock.last_header("authorization").as_deref(), Some("Bearer sk-user-own"));
    assert_eq!(mock.last_body()["previous_response_id"], "resp_someone_elses");
}
