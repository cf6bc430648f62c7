//! The seed documents' OpenAI SDK snippets, run unchanged by the official Python and Node SDKs
//! against a real memgate in front of the fixture upstream.
//!
//! The scripts live in tests/sdk/{python,node}; each prints "N passed, M failed". They run twice:
//! with open auth (the SDK's api_key is a placeholder) and with gateway keys (which adds the 401
//! and BYOK snippets). Without the SDKs installed the tests skip, except under CI.

mod common;

use common::*;
use std::process::Command;

fn gateway(mock: &Mock, keys: bool) -> Gateway {
    let auth = if keys { "[auth]\nmode = \"keys\"\n" } else { "" };
    // The seeds route to "google/…", "openai/…" and "anthropic/…", and use bare names like
    // "gpt-4o-mini". Every provider here speaks the OpenAI format (Anthropic and Gemini both
    // offer OpenAI-compatible endpoints); their native formats are tested with their adapters.
    let models = [
        (
            "openai",
            "\"gpt-4o-mini\", \"gpt-5.4-mini\", \"text-embedding-3-small\"",
        ),
        ("google", "\"gemini-2.5-flash\""),
        ("anthropic", "\"claude-sonnet-4\""),
    ];
    let mut config = format!("default_provider = \"openai\"\n{auth}");
    for (name, list) in models {
        config.push_str(&provider(name, mock, &format!("models = [{list}]")));
    }
    Gateway::start(&config)
}

fn run_sdk(program: &str, script: &str, ready: bool) {
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "{program} SDK missing under CI (.ci/run installs it)"
        );
        eprintln!("skipped: the {program} OpenAI SDK is not installed (see README, Quick start)");
        return;
    }
    let mock = Mock::start("fixtures/openai");
    for keys in [false, true] {
        let gw = gateway(&mock, keys);
        let key = if keys {
            let out = gw.cli(&["keys", "create", "sdk"]);
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        } else {
            "anything".to_owned()
        };
        let mut cmd = Command::new(program);
        cmd.arg(repo().join(script))
            .env("MEMGATE_BASE_URL", format!("http://{}/v1", gw.addr))
            .env("MEMGATE_API_KEY", &key)
            .env("MEMGATE_EXPECT_AUTH", if keys { "1" } else { "0" })
            // Stray variables on the host must not redirect the SDK away from memgate.
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_BASE")
            .env_remove("OPENAI_API_KEY");
        if !keys {
            // BYOK needs a gateway key to identify the caller; it runs in the keyed pass.
            cmd.env("MEMGATE_SKIP", "byok_pass_through");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
        eprintln!("{program} ({}): {summary}", if keys { "keys" } else { "open" });
        assert!(
            out.status.success() && summary.contains(" 0 failed"),
            "{program} seeds failed ({}):\n{stdout}\n{}\n--- gateway log ---\n{}",
            if keys { "keys" } else { "open" },
            String::from_utf8_lossy(&out.stderr),
            gw.log()
        );
    }
}

#[test]
fn python_sdk_runs_the_seed_snippets() {
    let ready = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    run_sdk("python3", "tests/sdk/python/seeds.py", ready);
}

#[test]
fn node_sdk_runs_the_seed_snippets() {
    let ready = repo().join("tests/sdk/node/node_modules/openai/package.json").exists();
    run_sdk("node", "tests/sdk/node/seeds.mjs", ready);
}
