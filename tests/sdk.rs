//! The seed documents' OpenAI SDK snippets, run unchanged by the official Python and Node SDKs,
//! and the official Anthropic Python SDK on `/v1/messages`, against a real memgate in front of the
//! fixture upstreams.
//!
//! The scripts live in tests/sdk/{python,node}; each prints "N passed, M failed". They run twice:
//! with open auth (the SDK's api_key is a placeholder) and with gateway keys (which adds the 401
//! and BYOK snippets). Without the SDKs installed the tests skip, except under CI.

mod common;

use common::*;
use std::process::Command;

/// One mock per vendor wire format, each replaying that vendor's recorded exchanges.
struct Upstreams {
    openai: Mock,
    gemini: Mock,
    anthropic: Mock,
}

impl Upstreams {
    fn start() -> Upstreams {
        Upstreams {
            openai: Mock::start("fixtures/openai"),
            gemini: Mock::start("fixtures/gemini"),
            anthropic: Mock::start("fixtures/anthropic"),
        }
    }
}

fn gateway(up: &Upstreams, keys: bool) -> Gateway {
    let auth = if keys { "[auth]\nmode = \"keys\"\n" } else { "" };
    // The seeds route to "google/…", "openai/…" and "anthropic/…", and use bare names like
    // "gpt-4o-mini". Each provider speaks its vendor's native format: `google` is a Gemini API
    // upstream (generateContent, x-goog-api-key), `anthropic` a Messages API upstream.
    let openai = provider(
        "openai",
        &up.openai,
        "models = [\"gpt-4o-mini\", \"gpt-5.4-mini\", \"text-embedding-3-small\"]",
    );
    Gateway::start(&format!(
        "default_provider = \"openai\"\n{auth}{openai}\
         [providers.google]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"gemini-configured-google\"\n\
         models = [\"gemini-2.5-flash\"]\n\
         [providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"sk-ant-configured-anthropic\"\n\
         models = [\"claude-sonnet-4\"]\n",
        up.gemini.url, up.anthropic.url
    ))
}

/// Runs `script` with `program` against a fresh gateway, open and then with keys.
fn run_sdk(program: &str, script: &str, sdk: &str, ready: bool) {
    if skip_without(ready, &format!("the {program} {sdk} SDK")) {
        return;
    }
    let up = Upstreams::start();
    for keys in [false, true] {
        let gw = gateway(&up, keys);
        let key = if keys {
            let out = gw.cli(&["keys", "create", "sdk"]);
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        } else {
            "anything".to_owned()
        };
        // BYOK needs a gateway key to identify the caller; it runs in the keyed pass.
        let skipped = if keys { "" } else { "byok_pass_through" };
        let mut cmd = Command::new(program);
        cmd.arg(repo().join(script))
            .env("MEMGATE_BASE_URL", format!("http://{}/v1", gw.addr))
            .env("MEMGATE_API_KEY", &key)
            .env("MEMGATE_EXPECT_AUTH", if keys { "1" } else { "0" })
            .env("MEMGATE_SKIP", skipped)
            // Stray variables on the host must not redirect the SDK away from memgate.
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_BASE")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("ANTHROPIC_CUSTOM_HEADERS");
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
        eprintln!("{program} {script} ({}): {summary}", if keys { "keys" } else { "open" });
        assert!(
            out.status.success() && summary.contains(" 0 failed"),
            "{program} {script} failed ({}):\n{stdout}\n{}\n--- gateway log ---\n{}",
            if keys { "keys" } else { "open" },
            String::from_utf8_lossy(&out.stderr),
            gw.log()
        );
    }
}

#[test]
fn python_sdk_runs_the_seed_snippets() {
    run_sdk("python3", "tests/sdk/python/seeds.py", "OpenAI", python_has("openai"));
}

#[test]
fn node_sdk_runs_the_seed_snippets() {
    let ready = repo().join("tests/sdk/node/node_modules/openai/package.json").exists();
    run_sdk("node", "tests/sdk/node/seeds.mjs", "OpenAI", ready);
}

#[test]
fn python_anthropic_sdk_messages() {
    run_sdk(
        "python3",
        "tests/sdk/python/anthropic_sdk.py",
        "Anthropic",
        python_has("anthropic") && python_has("openai"),
    );
}
