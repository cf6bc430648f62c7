//! Fuzzing the upstream side: the real gateway in front of a scripted upstream that answers
//! each request with a mutated copy of a real fixture answer (OpenAI, Anthropic and Gemini;
//! JSON and SSE; framed by length, chunks or close). Mutations flip and drop bytes, truncate,
//! and splice in what response parsers trip on: non-ASCII, CR/LF, duplicate and bogus lengths,
//! bad chunk sizes, interim heads, huge lines. Every client request must get a well-formed
//! HTTP answer, the gateway must never die, and a normal request must work at the end.
//! Reproduce or search further with
//! `MEMGATE_FUZZ_SEED=N MEMGATE_FUZZ_ROUNDS=5000 cargo test --test upstream_hostile fuzzed`.

use crate::client_fuzz::{edit, env, Report, Rng};
use crate::common::{read_response, repo, Gateway};
use crate::script::Scripted;
use crate::wire::exchange;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Header fields that framing and header parsing care about, spliced in at a line start.
const FIELDS: &[&[u8]] = &[
    b"x-note: caf\xc3\xa9\r\n",
    b"x-note: \xff\xfe\r\n",
    b"content-length: 0\r\n",
    b"content-length: 7\r\n",
    b"content-length: 99999999999999999999\r\n",
    b"content-length: -1\r\n",
    b"transfer-encoding: chunked\r\n",
    b"transfer-encoding: gzip\r\n",
    b"connection: close\r\n",
    b"content-type: text/event-stream\r\n",
    b"retry-after: 99999999999999999999\r\n",
];

/// Words that response parsers and SSE readers care about, spliced in anywhere.
const SPLICE: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\n\n",
    b"\0",
    b"\r\n\r\n",
    b"\xc3\xa9",
    b"\xff\xfe",
    b"ffffffffffffffffff\r\n",
    b"0\r\n\r\n",
    b"1;ext=\xc3\xa9\r\nx\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 ",
    b"HTTP/1.1 529 ",
    b"data: ",
    b"event: error\n",
    b"data: [DONE]\n\n",
    b"{\"error\":",
    b"\"",
    b"[[[[[[[[",
];

/// One planned answer: its bytes and whether the connection stays open after it.
type Plan = Vec<(Vec<u8>, bool)>;

/// The request (and the fixture answering it) for round `round`.
fn request(kind: usize, stream: bool, round: usize) -> Vec<u8> {
    let model = ["oa/x", "an/x", "ge/x"][kind];
    post(&format!(
        r#"{{"model":"{model}","stream":{stream},"max_tokens":50,"messages":[{{"role":"user","content":"fuzz round {round}."}}]}}"#
    ))
}

/// A chat request with this body, on a connection the gateway closes after answering.
fn post(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn fixture(kind: usize, stream: bool) -> Vec<u8> {
    let dir = ["openai", "anthropic", "gemini"][kind];
    let name = match (kind, stream) {
        (0, false) => "010_chat_two_plus_two/response.json",
        (0, true) => "041_chat_count_stream/response.sse",
        (_, false) => "042_count_json/response.json",
        (_, true) => "040_count_stream/response.sse",
    };
    std::fs::read(repo().join("fixtures").join(dir).join(name)).unwrap()
}

/// A valid answer in one of the three framings.
fn answer(rng: &mut Rng, body: &[u8], stream: bool) -> Vec<u8> {
    let ct = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut out = format!("HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\n").into_bytes();
    match rng.below(3) {
        0 => {
            out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
        1 => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            let mut rest = body;
            while !rest.is_empty() {
                let (c, r) = rest.split_at(1 + rng.below(rest.len().min(4096)));
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
                rest = r;
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        _ => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
    }
    out
}

fn mutate(rng: &mut Rng, mut res: Vec<u8>) -> Vec<u8> {
    // Most of what matters is in the head: aim there, often at a line start.
    let line_start = |rng: &mut Rng, res: &[u8]| {
        let from = rng.below(res.len().min(160) + 1);
        res[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(from, |i| from + i + 2)
    };
    if rng.below(3) == 0 {
        let at = line_start(rng, &res);
        let field = FIELDS[rng.below(FIELDS.len())];
        res.splice(at..at, field.iter().copied());
    }
    for _ in 0..=rng.below(4) {
        let at = match rng.below(3) {
            0 => rng.below(res.len().min(160) + 1),
            1 => line_start(rng, &res),
            _ => rng.below(res.len() + 1),
        };
        if rng.below(16) == 0 {
            // A huge line: sometimes past the SSE event bound (4 MiB), sometimes not.
            let len = if rng.below(2) == 0 { 64 << 10 } else { 5 << 20 };
            res.splice(at..at, std::iter::repeat_n(b'a', len));
        } else {
            edit(rng, &mut res, at, SPLICE);
        }
    }
    res
}

/// The round number a request carries, if it is a fuzz request.
fn round_of(body: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("fuzz round ")? + 11;
    text[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A gateway with providers of the three kinds, all answered by one scripted upstream.
fn gateway(up: &Scripted) -> Gateway {
    Gateway::start(&format!(
        "[retry]\nmax_attempts = 1\n[timeouts]\nfirst_byte_ms = 1000\nidle_ms = 1000\n\
         [providers.oa]\nkind = \"openai\"\nbase_url = \"{0}/v1\"\napi_key = \"sk-oa\"\n\
         [providers.an]\nkind = \"anthropic\"\nbase_url = \"{0}\"\napi_key = \"sk-an\"\n\
         [providers.ge]\nkind = \"gemini\"\nbase_url = \"{0}\"\napi_key = \"ge-key\"\n",
        up.url
    ))
}

/// Runs the rounds over four client threads and reports; the gateway must survive them all.
pub fn run() -> Report {
    let seed = env("MEMGATE_FUZZ_SEED", 1);
    let rounds = env("MEMGATE_FUZZ_ROUNDS", 500) as usize;
    // Odd and distinct for every seed (xorshift needs a state other than 0).
    let mut rng = Rng((seed.wrapping_mul(2) | 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut plan: Plan = Vec::with_capacity(rounds);
    let mut requests = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (kind, stream) = (rng.below(3), rng.below(2) == 0);
        let res = answer(&mut rng, &fixture(kind, stream), stream);
        plan.push((mutate(&mut rng, res), rng.below(6) == 0));
        requests.push(request(kind, stream, round));
    }
    let plan = Arc::new(plan);
    let answers = plan.clone();
    // Rounds that reached the upstream: a gateway refusing them all would pass vacuously.
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    let up = Scripted::start(move |_, seen, s| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (bytes, keep) = match round_of(&seen.body) {
            Some(r) => answers[r].clone(),
            None => (answer(&mut Rng(7), &fixture(0, false), false), true),
        };
        s.write_all(&bytes).is_ok() && keep
    });
    let gw = gateway(&up);
    let report = Arc::new(Mutex::new(Report {
        seed,
        rounds,
        ..Report::default()
    }));
    let requests = Arc::new(requests);
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, report, requests) = (gw.addr.clone(), report.clone(), requests.clone());
            std::thread::spawn(move || {
                for round in (t..rounds).step_by(4) {
                    let out = exchange(&addr, &requests[round], Duration::from_secs(10));
                    let verdict = judge(&out);
                    let mut r = report.lock().unwrap();
                    match verdict {
                        Ok(()) => r.answered += 1,
                        Err(why) => r.failures.push(format!("round {round}: {why}")),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut report = std::mem::take(&mut *report.lock().unwrap());
    report.took = start.elapsed();
    let reached = reached.load(std::sync::atomic::Ordering::Relaxed);
    if reached < rounds {
        report.failures.push(format!(
            "only {reached} of {rounds} rounds reached the upstream: the fuzz fed the gateway nothing"
        ));
    }
    // Still alive and still serving: a clean request answers normally, nothing panicked.
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.pid())).unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("State:") && !l.contains('Z')) {
        report.failures.push("the gateway died".to_owned());
    }
    let clean = exchange(
        &gw.addr,
        &post(r#"{"model":"oa/x","messages":[{"role":"user","content":"What is 2+2?"}]}"#),
        Duration::from_secs(10),
    );
    if !clean.text().starts_with("HTTP/1.1 200") || !clean.text().contains("\"content\":\"4\"") {
        report
            .failures
            .push(format!("a normal request after the fuzz: {}", clean.text()));
    }
    if gw.log().contains("panicked") {
        report.failures.push(format!("a panic: {}", gw.log()));
    }
    report
}

/// A complete, well-formed HTTP answer: status line, head, a body framed as declared (a JSON
/// body when it says JSON), then the close the client asked for.
fn judge(out: &crate::wire::Outcome) -> Result<(), String> {
    let text: String = out.text().chars().take(300).collect();
    if !out.closed {
        return Err(format!("no close within 10 s after {text:?}"));
    }
    if !text.starts_with("HTTP/1.1 ") {
        return Err(format!("not an HTTP answer: {text:?}"));
    }
    let res = std::panic::catch_unwind(|| read_response(&mut std::io::Cursor::new(&out.bytes)))
        .map_err(|_| format!("a malformed answer: {text:?}"))?;
    let json = res
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    if json && serde_json::from_slice::<serde_json::Value>(&res.body).is_err() {
        return Err(format!("a JSON answer that is not JSON: {text:?}"));
    }
    Ok(())
}
