//! What ships: the systemd unit, the example config, and the static binary.
//!
//! These need host tools (systemd-analyze, the musl target). Missing tools skip a test with a
//! note on a developer machine; under CI (`CI=true`, set by .ci/run, which installs them) they
//! fail it instead.

mod common;

use common::*;
use std::process::Command;

fn tool_missing(what: &str) -> bool {
    assert!(
        std::env::var("CI").is_err(),
        "{what} is required under CI (.ci/run installs it)"
    );
    eprintln!("skipped: {what} not available on this machine");
    true
}

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(repo().join("systemd/memgate.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=memgate",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "EnvironmentFile=-/etc/memgate/env",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/memgate serve --config /etc/memgate/memgate.toml",
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "LoadCredential=OPENAI_API_KEY\n",
        "PrivateUsers=yes",
        "PrivateMounts=yes",
        "ProcSubset=pid",
        "MemoryMax=",
        "TasksMax=",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive:?}");
    }
    if !has("systemd-analyze") && tool_missing("systemd-analyze") {
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = temp_dir("unit");
    let path = dir.join("memgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/memgate", MEMGATE)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("memgate.service")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    let score = exposure(&path);
    eprintln!("systemd-analyze security: overall exposure {score}");
    assert!(score <= 1.0, "the unit's exposure is {score}, over 1.0");
}

/// The overall exposure `systemd-analyze security --offline=true` gives a unit file.
fn exposure(unit: &std::path::Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line {line:?}"))
}

#[test]
fn example_config_is_valid_and_secret_free() {
    let path = repo().join("systemd/memgate.toml");
    let out = Command::new(MEMGATE)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("OPENAI_API_KEY", "sk-example-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("listen = \"0.0.0.0:4000\"") && !stdout.contains("sk-example-secret"),
        "{stdout}"
    );
}

#[test]
fn static_binary_is_small_and_statically_linked() {
    let target = "x86_64-unknown-linux-musl";
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let ready = installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(target)) && has("musl-gcc");
    if !ready
        && tool_missing("the musl target (rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools)")
    {
        return;
    }
    // A separate target dir: the outer `cargo test` may still hold the main one's lock.
    let target_dir = repo().join("target/static");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "--bin", "memgate", "--target", target])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success(), "static build failed");
    let bin = target_dir.join(target).join("release/memgate");
    let file = Command::new("file").arg(&bin).output().unwrap();
    let described = String::from_utf8_lossy(&file.stdout);
    assert!(
        described.contains("statically linked") || described.contains("static-pie linked"),
        "{described}"
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    eprintln!(
        "static binary: {size} bytes ({:.2} MiB): {}",
        size as f64 / 1048576.0,
        described.trim()
    );
    assert!(size <= 8 << 20, "static binary is {size} bytes, over the 8 MiB budget");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("memgate "));
}
