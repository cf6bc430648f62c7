//! Writes that really fail: the database on a tmpfs of a few MiB, filled until a commit fails.
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
    let config = format!("data_dir = {data:?}\n");
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
