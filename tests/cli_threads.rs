//! `memgate threads …` and `memgate forget`: the memory store from the shell, through the running
//! server's admin socket and, once it stops, from the database file itself.

mod common;

use common::*;
use serde_json::json;
use std::process::{Command, Output};

const INTRO: &str = "My name is Alex and I prefer concise answers.";
/// What fixtures/openai/070_chat_memory_intro answers.
const ANSWER: &str = "Nice to meet you, Alex! I'll keep my answers concise.";

fn gateway(mock: &Mock) -> Gateway {
    Gateway::start(&format!(
        "default_provider = \"openai\"\n{}",
        provider("openai", mock, "")
    ))
}

/// One chat turn with memory on: the gateway stores the intro and the answer in `thread`.
fn seed(gw: &Gateway, thread: &str, resource: &str) {
    let res = gw.post(
        "/v1/chat/completions",
        &[("x-thread-id", thread), ("x-resource-id", resource)],
        &json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": INTRO}]}),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["choices"][0]["message"]["content"], ANSWER);
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the CLI; asserts it succeeded with nothing on stderr; returns stdout.
fn ok(gw: &Gateway, args: &[&str]) -> String {
    let out = gw.cli(args);
    assert!(out.status.success(), "memgate {args:?} failed: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "memgate {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs the CLI; asserts it exited with `code` and one line on stderr; returns that line.
fn fails(out: Output, code: i32, what: &str) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
    assert!(
        stderr.starts_with("memgate: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "{what}: one line on stderr, not {stderr:?}"
    );
    stderr
}

/// The table row of a thread, split into columns.
fn row(list: &str, id: &str) -> Option<Vec<String>> {
    list.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(id))
}

#[test]
fn list_and_show_read_the_same_with_and_without_the_server() {
    let mock = Mock::start("fixtures/openai");
    let mut gw = gateway(&mock);
    let empty = ok(&gw, &["threads", "list"]);
    assert!(empty.starts_with("no threads"), "{empty}");
    seed(&gw, "t1", "user-42");
    seed(&gw, "t2", "user-7");

    // The server holds the database: the CLI goes through its admin socket.
    let list = ok(&gw, &["threads", "list"]);
    let header = list.lines().next().unwrap();
    for col in ["ID", "TENANT", "RESOURCE", "MESSAGES", "CREATED", "UPDATED", "TITLE"] {
        assert!(header.contains(col), "{list}");
    }
    let t1 = row(&list, "t1").unwrap_or_else(|| panic!("t1 missing: {list}"));
    assert_eq!(t1[1..4], ["default", "user-42", "2"], "{list}");
    assert!(t1[4].ends_with('Z') && t1[4].len() == 24, "ISO 8601 created: {list}");
    assert!(row(&list, "t2").is_some(), "{list}");
    let (p1, p2) = (list.find("\nt1 ").unwrap(), list.find("\nt2 ").unwrap());
    assert!(p1 < p2, "oldest first: {list}");

    let only = ok(&gw, &["threads", "list", "--resource", "user-42"]);
    assert!(row(&only, "t1").is_some() && row(&only, "t2").is_none(), "{only}");
    assert_eq!(
        ok(&gw, &["threads", "list", "--resource=user-7", "--tenant", "default"])
            .lines()
            .count(),
        3
    );
    let none = ok(&gw, &["threads", "list", "--tenant", "someone-else"]);
    assert!(none.starts_with("no threads"), "{none}");

    let show = ok(&gw, &["threads", "show", "t1"]);
    for want in [
        "thread    t1",
        "tenant    default",
        "resource  user-42",
        "messages  2 stored, 0 observed",
        &format!("] user: {INTRO}\n"),
        &format!("] assistant: {ANSWER}\n"),
        "no observations yet",
    ] {
        assert!(show.contains(want), "missing {want:?} in:\n{show}");
    }
    assert!(
        show.find(INTRO).unwrap() < show.find(ANSWER).unwrap(),
        "in order: {show}"
    );
    assert!(!show.contains("Tool") && !show.contains("(incomplete)"), "{show}");

    // Stopped: the CLI opens the file itself and prints exactly the same.
    assert!(gw.terminate().success(), "{}", gw.log());
    assert_eq!(ok(&gw, &["threads", "list"]), list);
    assert_eq!(ok(&gw, &["threads", "list", "--resource", "user-42"]), only);
    assert_eq!(ok(&gw, &["threads", "show", "t1"]), show);
    let e = fails(gw.cli(&["threads", "show", "nope"]), 1, "show of an unknown thread");
    assert!(e.contains("\"nope\"") && e.contains("memgate threads list"), "{e}");
}

#[test]
fn delete_and_forget_erase_threads_with_and_without_the_server() {
    let mock = Mock::start("fixtures/openai");
    let mut gw = gateway(&mock);
    seed(&gw, "t1", "user-42");
    seed(&gw, "t2", "user-42");
    seed(&gw, "t3", "user-7");

    let deleted = ok(&gw, &["threads", "delete", "t1"]);
    assert!(
        deleted.contains("\"t1\"") && deleted.contains("user-42") && deleted.contains("2 messages"),
        "{deleted}"
    );
    let list = ok(&gw, &["threads", "list", "--resource", "user-42"]);
    assert!(row(&list, "t1").is_none() && row(&list, "t2").is_some(), "{list}");
    let e = fails(gw.cli(&["threads", "show", "t1"]), 1, "show of a deleted thread");
    assert!(e.contains("no thread \"t1\""), "{e}");
    fails(gw.cli(&["threads", "delete", "t1"]), 1, "deleting twice");

    let forgot = ok(&gw, &["forget", "--resource", "user-42"]);
    assert!(
        forgot.contains("erased 1 thread,") && forgot.contains("\"t2\""),
        "{forgot}"
    );
    let list = ok(&gw, &["threads", "list"]);
    assert!(row(&list, "t2").is_none() && row(&list, "t3").is_some(), "{list}");
    let none = ok(&gw, &["threads", "list", "--resource", "user-42"]);
    assert!(none.starts_with("no threads"), "{none}");
    // Forgotten for the server too: the id starts afresh.
    seed(&gw, "t2", "user-42");
    let list = ok(&gw, &["threads", "list"]);
    assert_eq!(row(&list, "t2").unwrap()[1..4], ["default", "user-42", "2"], "{list}");

    assert!(gw.terminate().success(), "{}", gw.log());
    let forgot = ok(&gw, &["forget", "--resource", "user-7", "--tenant", "default"]);
    assert!(
        forgot.contains("erased 1 thread,") && forgot.contains("\"t3\""),
        "{forgot}"
    );
    let list = ok(&gw, &["threads", "list"]);
    assert!(row(&list, "t2").is_some() && row(&list, "t3").is_none(), "{list}");
    let forgot = ok(&gw, &["forget", "--resource", "user-42", "--tenant", "someone-else"]);
    assert!(
        forgot.contains("erased 0 threads"),
        "another tenant's resource is not touched: {forgot}"
    );
    ok(&gw, &["forget", "--resource", "user-42"]);
    assert!(ok(&gw, &["threads", "list"]).starts_with("no threads"));
    let again = ok(&gw, &["forget", "--resource", "user-7"]);
    assert!(again.contains("erased 0 threads"), "forgetting is idempotent: {again}");
    let e = fails(gw.cli(&["threads", "delete", "t3"]), 1, "delete without the server");
    assert!(e.contains("no thread \"t3\""), "{e}");
}

/// The CLI with its own data_dir and no config file.
fn bare(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(MEMGATE)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("MEMGATE_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn help_and_usage_errors() {
    let dir = temp_dir("cli-usage");
    let top = text(&Command::new(MEMGATE).arg("--help").output().unwrap().stdout);
    assert!(
        top.contains("memgate threads list") && top.contains("memgate forget --resource R"),
        "{top}"
    );
    for (args, want) in [
        (&["threads", "--help"][..], "memgate threads show ID"),
        (&["forget", "--help"][..], "memgate forget --resource R [--tenant T]"),
    ] {
        let out = Command::new(MEMGATE).args(args).output().unwrap();
        assert!(out.status.success() && text(&out.stdout).contains(want), "{args:?}");
    }
    for args in [
        &["threads"][..],
        &["threads", "show"],
        &["threads", "delete"],
        &["threads", "bogus"],
        &["threads", "list", "extra"],
        &["threads", "show", "a", "b"],
        &["threads", "show", "t1", "--resource", "r"],
        &["forget"],
        &["forget", "--resource"],
        &["forget", "--resource", ""],
        &["forget", "user-42"],
        &["keys", "list", "--tenant", "x"],
        &["threads", "list", "--bogus"],
    ] {
        let e = fails(bare(&dir, args), 2, &format!("{args:?}"));
        assert!(e.contains("`memgate "), "{args:?} should say what to do: {e}");
    }
    // A config that cannot be loaded is a failure (1), not a usage error.
    let out = Command::new(MEMGATE)
        .args(["threads", "list", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    fails(out, 1, "missing config");
}
