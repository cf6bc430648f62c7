//! Storage limits. Writes that really fail: the database on a tmpfs of a few MiB, filled until
//! a commit fails. Per-key quotas of stored bytes, and caps on what requests put in storage.
//!
//! Mounting needs root (CI runs as root); elsewhere the test says `skipped:` and passes, and
//! under `CI=true` it fails instead.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = temp_dir("tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .output()
            .ok()?;
        if out.status.success() {
            return Some(Tmpfs(dir));
        }
        assert!(
            std::env::var("CI").is_err(),
            "mounting a tmpfs is required under CI (run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "skipped: cannot mount a tmpfs here ({}); run as root to test a full disk",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `filler`, then frees `spare` bytes of it.
fn fill_leaving(dir: &Path, filler: &Path, spare: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(filler).unwrap();
    let block = vec![0x5a; 64 << 10];
    let mut written = 0u64;
    while f.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    drop(f);
    // A partial last block may have been written: size the file from what is there.
    let len = std::fs::metadata(filler).unwrap().len().max(written);
    std::fs::OpenOptions::new()
        .write(true)
        .open(filler)
        .unwrap()
        .set_len(len.saturating_sub(spare))
        .unwrap();
    assert!(dir.exists());
}

fn save(gw: &Gateway, text: &str) -> Resp {
    gw.post(
        "/v1/memory/threads/full-thread/messages",
        &[],
        &json!({"messages": [{"role": "user", "content": text}]}),
    )
}

fn message(i: usize) -> String {
    format!("message {i}: {}", "x".repeat(24 << 10))
}

#[test]
fn a_full_disk_fails_writes_cleanly_healthz_says_so_and_space_coming_back_heals_without_a_restart() {
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let data = fs.0.join("data");
    let dir = temp_dir("full");
    let mock = Mock::start("fixtures/openai");
    let config = format!("data_dir = {data:?}\n{}", provider("openai", &mock, ""));
    let gw = Gateway::start_in(&dir, &config, &[]);
    let res = gw.post(
        "/v1/memory/threads",
        &[],
        &json!({"id": "full-thread", "resourceId": "full-user"}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    assert_eq!(gw.get("/healthz", &[]).status, 200);

    let filler = fs.0.join("filler");
    fill_leaving(&fs.0, &filler, 512 << 10);
    let mut acknowledged = Vec::new();
    let refused = loop {
        let i = acknowledged.len();
        assert!(
            i < 200,
            "200 writes of 24 KiB fit in 512 KiB: nothing failed: {}",
            gw.log()
        );
        let res = save(&gw, &message(i));
        if res.status != 201 {
            break res;
        }
        acknowledged.push(message(i));
    };
    eprintln!(
        "{} writes acknowledged before the disk was full; then {}: {}",
        acknowledged.len(),
        refused.status,
        refused.text()
    );
    let e = refused.expect_error(507, "server_error");
    assert_eq!(e["code"], "insufficient_storage", "{e}");

    // The failure is visible to a supervisor, and writes keep failing cleanly while it lasts.
    let health = gw.get("/healthz", &[]);
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(
        health.json()["reason"].as_str().is_some_and(|r| r.contains("write")),
        "{}",
        health.text()
    );
    save(&gw, &message(9999)).expect_error(507, "server_error");
    assert_eq!(gw.get("/healthz", &[]).status, 503);
    // A chat turn whose exchange cannot be stored gets the same error, in its own format.
    let memory = [("x-thread-id", "full-thread"), ("x-resource-id", "full-user")];
    let ask = json!({"model": "openai/gpt-4o-mini", "max_tokens": 16,
                     "messages": [{"role": "user", "content": format!("Hello {}", "x".repeat(24 << 10))}]});
    let res = gw.post("/v1/chat/completions", &memory, &ask);
    assert_eq!(
        res.json()["error"]["code"],
        "insufficient_storage",
        "{}: {}",
        res.text(),
        gw.log()
    );
    let res = gw.post("/v1/messages", &memory, &ask);
    assert_eq!(res.status, 507, "{}", res.text());
    anthropic_error_saying(&res, "disk is full");

    // Space comes back: the same process writes again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if gw.get("/healthz", &[]).status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthz stayed 503 with space back: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let i = acknowledged.len();
    let res = save(&gw, &message(i));
    assert_eq!(res.status, 201, "{}: {}", res.text(), gw.log());
    acknowledged.push(message(i));
    let log = gw.log();
    assert!(log.contains("reopened after a failed write"), "{log}");

    // Everything acknowledged is there after a crash and restart; nothing refused is.
    gw.kill();
    let gw = Gateway::start_in(&dir, &config, &[]);
    let res = gw.get("/v1/memory/threads/full-thread/messages?limit=1000", &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    let stored: Vec<Value> = res.json()["messages"].as_array().unwrap().clone();
    let texts: Vec<&str> = stored.iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(
        texts.len(),
        acknowledged.len(),
        "stored {} of {}",
        texts.len(),
        acknowledged.len()
    );
    assert!(texts.iter().zip(&acknowledged).all(|(a, b)| a == b));
}

#[test]
fn a_database_that_cannot_be_reopened_after_a_failed_write_exits_non_zero_for_a_restart() {
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let data = fs.0.join("data");
    let mut gw = Gateway::start_in(&temp_dir("no-reopen"), &format!("data_dir = {data:?}\n"), &[]);
    let res = gw.post(
        "/v1/memory/threads",
        &[],
        &json!({"id": "full-thread", "resourceId": "u"}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    // The open handle keeps writing to the unlinked file; a reopen finds no file.
    std::fs::remove_file(data.join("memgate.redb")).unwrap();
    fill_leaving(&fs.0, &fs.0.join("filler"), 256 << 10);
    let refused = (0..200)
        .map(|i| save(&gw, &message(i)))
        .find(|r| r.status != 201)
        .expect("nothing failed on a full disk");
    refused.expect_error(507, "server_error");
    let status = gw.exited(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", gw.log());
    assert!(gw.log().contains("cannot reopen the database"), "{}", gw.log());
    // It was not recreated empty.
    assert!(!data.join("memgate.redb").exists());
}

#[test]
fn a_key_created_on_a_full_disk_fails_cleanly_and_marks_the_store_until_space_returns() {
    let Some(fs) = Tmpfs::mount("6m") else { return };
    let gw = Gateway::start_in(
        &temp_dir("key-full"),
        &format!("data_dir = {:?}\n", fs.0.join("data")),
        &[],
    );
    let filler = fs.0.join("filler");
    fill_leaving(&fs.0, &filler, 0);
    // Key management commits through the writer like every write: its failure is seen.
    let out = gw.cli(&["keys", "create", "late"]);
    assert!(!out.status.success(), "a key was created on a full disk");
    assert_eq!(gw.get("/healthz", &[]).status, 503, "{}", gw.log());
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.get("/healthz", &[]).status != 200 {
        assert!(Instant::now() < deadline, "healthz stayed 503: {}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = gw.cli(&["keys", "create", "late"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Asserts an error in Anthropic's shape whose message holds `word`.
fn anthropic_error_saying(res: &Resp, word: &str) {
    let body = res.json();
    assert_eq!(body["type"], "error", "{}", res.text());
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains(word)),
        "{}",
        res.text()
    );
}

fn chat(model_extra: Value) -> Value {
    let mut body = json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]});
    for (k, v) in model_extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn user_tags_title_and_metadata_over_their_caps_are_refused_naming_field_and_cap() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&format!(
        "default_provider = \"openai\"\n{}",
        provider("openai", &mock, "")
    ));
    let refused = |res: Resp, field: &str, cap: &str| {
        let e = res.expect_error(400, "invalid_request_error");
        assert_eq!(e["param"], field, "{e}");
        assert!(e["message"].as_str().unwrap().contains(cap), "{e}");
    };
    let long = "u".repeat(257);
    refused(
        gw.post("/v1/chat/completions", &[], &chat(json!({"user": long}))),
        "user",
        "256",
    );
    let tags: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    refused(
        gw.post("/v1/chat/completions", &[], &chat(json!({"tags": tags}))),
        "tags",
        "16",
    );
    refused(
        gw.post("/v1/chat/completions", &[], &chat(json!({"tags": ["x".repeat(65)]}))),
        "tags",
        "64",
    );
    // Anthropic's Messages API: `metadata.user_id` is the same `user`, refused in its format.
    let res = gw.post(
        "/v1/messages",
        &[],
        &json!({"model": "openai/gpt-4o-mini", "max_tokens": 16, "metadata": {"user_id": "u".repeat(257)},
                "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(res.status, 400, "{}", res.text());
    anthropic_error_saying(&res, "256");
    assert!(mock.requests().is_empty(), "a refused request reached the upstream");
    // At the caps, all is well.
    let ok = gw.post(
        "/v1/chat/completions",
        &[],
        &chat(json!({"user": "u".repeat(256), "tags": (0..16).map(|i| format!("{i:0>64}")).collect::<Vec<_>>()})),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());

    let thread = |extra: Value| {
        let mut body = json!({"resourceId": "r"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        gw.post("/v1/memory/threads", &[], &body)
    };
    refused(thread(json!({"title": "t".repeat(1025)})), "title", "1024");
    refused(
        thread(json!({"metadata": {"blob": "m".repeat(16 << 10)}})),
        "metadata",
        "16384",
    );
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    refused(thread(json!({"metadata": many})), "metadata", "64");
    let res = thread(json!({"id": "capped", "title": "t".repeat(1024)}));
    assert_eq!(res.status, 201, "{}", res.text());
    let patch = request(
        &gw.addr,
        "PATCH",
        "/v1/memory/threads/capped",
        &[],
        json!({"title": "t".repeat(1025)}).to_string().as_bytes(),
    );
    refused(patch, "title", "1024");
}

/// Stores a message of 10 kB in `id` with the key in `auth`.
fn save_10k(gw: &Gateway, auth: &str, id: &str, i: usize) -> Resp {
    gw.post(
        &format!("/v1/memory/threads/{id}/messages"),
        &[("authorization", auth)],
        &json!({"messages": [{"role": "user", "content": format!("{i} {}", "q".repeat(10_000))}]}),
    )
}

#[test]
fn a_key_over_its_stored_bytes_quota_is_refused_until_it_deletes() {
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("quota");
    let config = format!(
        "[auth]\nmode = \"keys\"\n[limits]\nmax_stored_bytes_per_key = 100000\n{}",
        provider("openai", &mock, "")
    );
    let config = config.as_str();
    let gw = Gateway::start_in(&dir, config, &[]);
    let (a, b) = (
        format!("Bearer {}", gw.create_key("quota-a")),
        format!("Bearer {}", gw.create_key("quota-b")),
    );
    for (auth, id) in [(&a, "qa"), (&a, "qa2"), (&b, "qb")] {
        let res = gw.post(
            "/v1/memory/threads",
            &[("authorization", auth)],
            &json!({"id": id, "resourceId": "r"}),
        );
        assert_eq!(res.status, 201, "{}", res.text());
    }
    let save = |auth: &str, id: &str, i: usize| save_10k(&gw, auth, id, i);
    let mut stored = 0;
    let refused = loop {
        let res = save(&a, if stored % 2 == 0 { "qa" } else { "qa2" }, stored);
        if res.status != 201 {
            break res;
        }
        stored += 1;
        assert!(stored < 20, "100 kB quota took {stored} messages of 10 kB");
    };
    assert!(
        (8..=10).contains(&stored),
        "{stored} messages of 10 kB fit a 100 kB quota"
    );
    let e = refused.expect_error(429, "insufficient_quota");
    assert_eq!(e["code"], "storage_quota_exceeded", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("max_stored_bytes_per_key"),
        "{e}"
    );
    // Another key's quota is its own.
    assert_eq!(save(&b, "qb", 0).status, 201);
    // The count survives a restart (it lives in the database, not in memory).
    drop(gw);
    let gw = Gateway::start_in(&dir, config, &[]);
    let save = |auth: &str, id: &str, i: usize| save_10k(&gw, auth, id, i);
    save(&a, "qa", 99).expect_error(429, "insufficient_quota");
    // A chat turn with memory is refused before the model is called, in the caller's format.
    let res = gw.post(
        "/v1/messages",
        &[("x-api-key", a.trim_start_matches("Bearer ")), ("x-thread-id", "qa"), ("x-resource-id", "r")],
        &json!({"model": "openai/gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "q".repeat(20_000)}]}),
    );
    assert_eq!(res.status, 429, "{}", res.text());
    anthropic_error_saying(&res, "quota");
    assert!(mock.requests().is_empty(), "the refused turn reached the upstream");
    // Thread records count too: at its quota a key can neither create threads nor grow one.
    let big = json!({"resourceId": "r", "metadata": {"pad": "m".repeat(15_000)}});
    let res = gw.post("/v1/memory/threads", &[("authorization", &a)], &big);
    res.expect_error(429, "insufficient_quota");
    let res = request(
        &gw.addr,
        "PATCH",
        "/v1/memory/threads/qa2",
        &[("authorization", &a), ("content-type", "application/json")],
        json!({"metadata": {"pad": "m".repeat(15_000)}}).to_string().as_bytes(),
    );
    res.expect_error(429, "insufficient_quota");
    // Deleting a thread gives its bytes back.
    let res = request(
        &gw.addr,
        "DELETE",
        "/v1/memory/threads/qa",
        &[("authorization", &a)],
        b"",
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(save(&a, "qa2", 100).status, 201);
}
