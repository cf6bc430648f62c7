//! `memgate eval longmemeval` end to end and offline: the real binary runs the synthetic set in
//! fixtures/longmemeval against a config whose only provider is a `replay` of
//! fixtures/longmemeval/replay, which plays the answering model, the observer, the reflector and
//! the judge, each answering only from what it is sent. So a right answer means the fact went
//! through memory: imported with its session's date, observed, reflected, put back in context.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = "fixtures/longmemeval/data.json";

/// A config whose replay provider answers from `replay`, with thresholds low enough that every
/// session is observed and longer histories are reflected.
fn config(dir: &Path, replay: &Path) -> PathBuf {
    let path = dir.join("memgate.toml");
    std::fs::write(
        &path,
        format!(
            "default_provider = \"replay\"\n[providers.replay]\nkind = \"replay\"\ndir = {:?}\n\
             [memory]\nmessage_tokens = 20\nobservation_tokens = 40\n",
            replay
        ),
    )
    .unwrap();
    path
}

fn eval_cmd(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(MEMGATE);
    cmd.args(["eval", "longmemeval", "--data"])
        .arg(repo().join(DATA))
        .args(["--model", "replay/gpt-4o-mini", "--judge", "replay/gpt-4o", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("RUST_LOG")
        .env("TMPDIR", out.parent().unwrap());
    cmd
}

fn eval(config: &Path, out: &Path, extra: &[&str]) -> Output {
    eval_cmd(config, out, extra).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn results(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ids(rs: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rs
        .iter()
        .map(|r| r["question_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// No in-process database is left in the (per-test) temp dir.
fn no_leftovers(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("memgate-eval-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn grades_the_synthetic_set_through_memory() {
    let dir = temp_dir("lme-full");
    let out = dir.join("results.jsonl");
    let run = eval(&config(&dir, &repo().join("fixtures/longmemeval/replay")), &out, &[]);
    let (stdout, stderr) = (text(&run.stdout), text(&run.stderr));
    eprintln!("{stdout}{stderr}");
    assert!(run.status.success(), "{stdout}{stderr}");
    // Five right, one missed: the scripted observer does not record the sister's move, so the
    // model cannot know it (the runner reports what memory kept, not what the data holds).
    for line in [
        "LongMemEval data.json: 6 of 6 questions graded (6 this run), model replay/gpt-4o-mini, judge replay/gpt-4o",
        "accuracy                     83.33% (5/6)",
        "  (abstention, _abs)        100.00% (1/1)",
        "  knowledge-update          100.00% (2/2)",
        "  single-session-user        66.67% (2/3)",
        "  temporal-reasoning        100.00% (1/1)",
        // Each fixture's usage: answers 100+10, judge 150+1, so six questions are exact.
        "tokens this run (GET /v1/usage): answers 660 (600 prompt + 60 completion), judge 906, memory ",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(stderr.contains("6/6 accuracy 83.33% (5/6)"), "{stderr}");
    assert!(
        !stderr.contains("memgate::access"),
        "the request log stays off: {stderr}"
    );
    let rs = results(&out);
    assert_eq!(rs.len(), 6);
    let by = |id: &str| rs.iter().find(|r| r["question_id"] == id).unwrap().clone();
    // The session date reached memory: the observer saw "May 5 2023" in its transcript.
    assert_eq!(
        by("tr_guitar")["hypothesis"],
        "You started learning the guitar on May 5 2023."
    );
    // Sessions replay in date order, whatever the file's order: the newest city wins.
    assert_eq!(by("ku_city")["hypothesis"], "You live in Seattle now.");
    assert!(by("ku_city")["reflector_runs"].as_u64() > Some(0), "{}", by("ku_city"));
    // The abstention question was graded with the abstention prompt (its fixture needs it).
    let abs = by("ssu_cat_abs");
    assert_eq!(
        (abs["abstention"].as_bool(), abs["autoeval_label"]["label"].as_bool()),
        (Some(true), Some(true))
    );
    let missed = by("ssu_sister");
    assert_eq!(missed["hypothesis"], "I don't remember you mentioning that.");
    assert_eq!(
        missed["autoeval_label"],
        serde_json::json!({"model": "replay/gpt-4o", "label": false})
    );
    for r in &rs {
        assert!(r["usage"]["memory_tokens"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["memory_failures"], 0, "{r}");
    }
    no_leftovers(&dir);
}

#[test]
fn an_interrupted_run_resumes_where_it_stopped() {
    // This one talks to a running gateway (`--url`) in front of memgate-mock, which can delay an
    // answer: the fixtures, plus a first answer to the fourth question (ku_job) slow enough to
    // interrupt the run there. Importing history starts the observer only with
    // `observer_model` set, so the gateway names one.
    let dir = temp_dir("lme-resume");
    let out = dir.join("results.jsonl");
    let fixtures = dir.join("replay");
    copy_dir(&repo().join("fixtures/longmemeval/replay"), &fixtures);
    let slow = fixtures.join("329_answer_job_slow");
    copy_dir(&fixtures.join("330_answer_job"), &slow);
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(slow.join("meta.json")).unwrap()).unwrap();
    m["delay_ms"] = 30_000.into();
    m["times"] = 1.into();
    std::fs::write(slow.join("meta.json"), m.to_string()).unwrap();
    let mock = Mock::start(fixtures.to_str().unwrap());
    let gw = Gateway::start(&format!(
        "default_provider = \"replay\"\n[memory]\nmessage_tokens = 20\nobservation_tokens = 40\n\
         observer_model = \"replay/gpt-4o-mini\"\n{}",
        provider("replay", &mock, "")
    ));
    let url = format!("http://{}", gw.addr);
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(MEMGATE);
        cmd.args(["eval", "longmemeval", "--data"])
            .arg(repo().join(DATA))
            .args([
                "--model",
                "replay/gpt-4o-mini",
                "--judge",
                "replay/gpt-4o",
                "--url",
                &url,
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .env_remove("RUST_LOG");
        cmd
    };
    let child = run(&["--concurrency", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "the first three questions were not graded");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let stopped = child.wait_with_output().unwrap();
    let stderr = text(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interrupted: 3 of 6 questions are graded in")
            && stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    // Graded questions' threads were deleted from the gateway; the interrupted one's is left.
    let threads = gw.get("/v1/memory/threads", &[]).json();
    assert_eq!(threads["total"], 1, "{threads}");
    assert!(
        threads["threads"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("longmemeval-ku_job-"),
        "{threads}"
    );
    // A line cut short by a crash mid-write is dropped, and its question asked again.
    let mut file = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut file, br#"{"question_id":"ku_job","hypo"#).unwrap();
    drop(file);
    let resumed = run(&[]).output().unwrap();
    let (stdout, stderr) = (text(&resumed.stdout), text(&resumed.stderr));
    assert!(resumed.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("resuming: 3 of 6 questions already graded"), "{stderr}");
    assert!(stdout.contains("6 of 6 questions graded (3 this run)"), "{stdout}");
    assert!(stdout.contains("accuracy                     83.33% (5/6)"), "{stdout}");
    let rs = results(&out);
    assert_eq!(
        ids(&rs),
        ["ku_city", "ku_job", "ssu_cat_abs", "ssu_dog", "ssu_sister", "tr_guitar"]
    );
    // Nothing left to do: another run only reports.
    let again = run(&[]).output().unwrap();
    assert!(
        text(&again.stdout).contains("6 of 6 questions graded (0 this run)"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(results(&out).len(), 6);
    // Results of another model are not mixed in.
    let other = run(&["--model", "replay/other"]).output().unwrap();
    assert_eq!(other.status.code(), Some(1));
    assert!(
        text(&other.stderr).contains("holds results of model \"replay/gpt-4o-mini\""),
        "{}",
        text(&other.stderr)
    );
}

#[test]
fn bad_command_lines_are_usage_errors() {
    let data = repo().join(DATA);
    let data = data.to_str().unwrap();
    for (args, code, says) in [
        (vec!["eval"], 2, "eval needs a benchmark"),
        (vec!["eval", "locomo"], 2, "unknown benchmark \"locomo\""),
        (
            vec!["eval", "longmemeval", "--data", data, "--model", "a/b"],
            2,
            "needs --judge",
        ),
        (
            vec![
                "eval",
                "longmemeval",
                "--data",
                data,
                "--model",
                "a/b",
                "--judge",
                "a/b",
                "--limit",
                "0",
            ],
            2,
            "--limit needs a positive",
        ),
        (
            vec![
                "eval",
                "longmemeval",
                "--data",
                data,
                "--model",
                "a/b",
                "--judge",
                "a/b",
                "--key",
                "msk_x",
            ],
            2,
            "--key goes with --url",
        ),
        (
            vec![
                "eval",
                "longmemeval",
                "--data",
                data,
                "--model",
                "a/b",
                "--judge",
                "a/b",
                "--url",
                "localhost:4000",
            ],
            2,
            "--url needs http://",
        ),
        (
            vec![
                "eval",
                "longmemeval",
                "--data",
                data,
                "--model",
                "a/b",
                "--judge",
                "a/b",
                "--bogus",
            ],
            2,
            "unknown option --bogus",
        ),
        (
            vec![
                "eval",
                "longmemeval",
                "--data",
                "/nonexistent.json",
                "--model",
                "a/b",
                "--judge",
                "a/b",
            ],
            1,
            "cannot read /nonexistent.json",
        ),
    ] {
        let out = Command::new(MEMGATE)
            .args(&args)
            .env_remove("MEMGATE_KEY")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let help = Command::new(MEMGATE).args(["eval", "--help"]).output().unwrap();
    assert!(text(&help.stdout).contains("memgate eval longmemeval --data FILE"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
