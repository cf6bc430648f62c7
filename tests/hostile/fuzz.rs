//! Fuzzing the HTTP parser and the JSON entry points of the running gateway.
//!
//! Valid requests (JSON and chunked bodies, keep-alive pairs, every JSON endpoint) are mutated
//! with a seeded generator: bytes flipped, dropped, repeated, and words spliced in that parsers
//! trip on (CR, LF, NUL, lengths, `chunked`, brackets, non-ASCII). Each goes out on its own
//! connection, half-closed; every one must get an HTTP answer or a close within a bound, never
//! a 500, and the server must stay up. Reproduce or search further with
//! `MEMGATE_FUZZ_SEED=N MEMGATE_FUZZ_ROUNDS=20000 cargo test --test hostile fuzzed`.

use crate::wire::send_and_half_close;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xorshift64*, as in `src/api/fuzz.rs`: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Words that parsers and framing care about.
const SPLICE: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"transfer-encoding: chunked\r\n",
    b"content-length: 99999999999999999999\r\n",
    b"content-length: -1\r\n",
    b"content-length: 5\r\n",
    b"expect: 100-continue\r\n",
    b"connection: close\r\n",
    b"content-type: text/plain\r\n",
    b"x-thread-id: ../t\r\nx-resource-id: r\r\n",
    b"HTTP/1.0",
    b"\xc3\xa9",
    b"\xff",
    b"[[[[[[[[",
    b"{\"a\":",
    b"\"",
    b"\\u0000",
    b"1e999",
    b"18446744073709551616",
    b"%00",
    b"%2e%2e%2f",
    b"/../",
];

/// Valid requests to start from.
fn seeds() -> Vec<Vec<u8>> {
    let chat =
        r#"{"model":"openai/x","messages":[{"role":"user","content":"What is 2+2? Reply with just the number."}]}"#;
    let stream = r#"{"model":"openai/x","stream":true,"messages":[{"role":"user","content":"Count from 1 to 5"}]}"#;
    let responses = r#"{"model":"openai/x","input":"What is 3+3?"}"#;
    let messages = r#"{"model":"openai/x","max_tokens":20,"messages":[{"role":"user","content":"Hello"}]}"#;
    let embeddings = r#"{"model":"openai/x","input":["Text 1","Text 2"]}"#;
    let thread = r#"{"id":"f1","resourceId":"r1","title":"t","metadata":{"k":[1,2]}}"#;
    let saved = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"ok"}]}"#;
    let post = |path: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let chunked = |path: &str, body: &str| {
        let (a, b) = body.split_at(body.len() / 2);
        format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .into_bytes()
    };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").into_bytes();
    vec![
        post("/v1/chat/completions", chat),
        post("/v1/chat/completions", stream),
        post("/v1/responses", responses),
        post("/v1/messages", messages),
        post("/v1/embeddings", embeddings),
        post("/v1/memory/threads", thread),
        post("/v1/memory/threads/t1/messages", saved),
        chunked("/v1/chat/completions", chat),
        chunked("/v1/memory/threads", thread),
        [get("/v1/models"), post("/v1/chat/completions", chat)].concat(),
        get("/v1/memory/threads/t1/messages?limit=5&order=desc"),
        get("/healthz"),
    ]
}

fn mutate(rng: &mut Rng, mut req: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(4) {
        let at = rng.below(req.len() + 1);
        edit(rng, &mut req, at, SPLICE);
    }
    req
}

/// One random edit at `at`: a byte replaced, a word of `splice` inserted, bytes dropped or
/// repeated, the rest cut off, or a letter's case or a digit changed.
pub fn edit(rng: &mut Rng, req: &mut Vec<u8>, at: usize, splice: &[&[u8]]) {
    match rng.below(6) {
        0 if at < req.len() => req[at] = rng.next() as u8,
        1 => {
            let word = splice[rng.below(splice.len())];
            req.splice(at..at, word.iter().copied());
        }
        2 => {
            let end = (at + rng.below(16)).min(req.len());
            req.drain(at..end);
        }
        3 => {
            let end = (at + rng.below(64)).min(req.len());
            let copy = req[at..end].repeat(1 + rng.below(8));
            req.splice(at..at, copy);
        }
        4 => req.truncate(at),
        _ => {
            // Swap case or a digit: header names, methods and lengths.
            if let Some(b) = req.get_mut(at) {
                *b = match *b {
                    b'0'..=b'9' => b'0' + rng.below(10) as u8,
                    c => c ^ 0x20,
                };
            }
        }
    }
}

/// What a fuzz run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub rounds: usize,
    pub answered: usize,
    pub closed: usize,
    pub failures: Vec<String>,
    pub took: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fuzz seed {} rounds {}: {} answered, {} closed without an answer, {} failures in {:?}",
            self.seed,
            self.rounds,
            self.answered,
            self.closed,
            self.failures.len(),
            self.took
        )?;
        for x in self.failures.iter().take(5) {
            write!(f, "\n  {x}")?;
        }
        Ok(())
    }
}

pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs the rounds over four client threads and reports.
pub fn run(addr: &str) -> Report {
    let seed = env("MEMGATE_FUZZ_SEED", 1);
    let rounds = env("MEMGATE_FUZZ_ROUNDS", 6000) as usize;
    let report = Arc::new(Mutex::new(Report {
        seed,
        rounds,
        ..Report::default()
    }));
    let seeds = Arc::new(seeds());
    let start = Instant::now();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (addr, report, seeds) = (addr.to_owned(), report.clone(), seeds.clone());
            std::thread::spawn(move || {
                let mut rng = Rng((seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                for round in (t as usize..rounds).step_by(4) {
                    let base = seeds[rng.below(seeds.len())].clone();
                    let req = mutate(&mut rng, base);
                    let verdict = judge(&send_and_half_close(&addr, &req, Duration::from_secs(5)));
                    let mut r = report.lock().unwrap();
                    match verdict {
                        Ok(true) => r.answered += 1,
                        Ok(false) => r.closed += 1,
                        Err(why) => r.failures.push(format!(
                            "round {round}: {why} for {:?}",
                            String::from_utf8_lossy(&req[..req.len().min(300)])
                        )),
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
    report
}

/// An answer (true) or a bare close (false) is fine; silence or a 500 is not.
fn judge(out: &crate::wire::Outcome) -> Result<bool, String> {
    if !out.closed {
        return Err("neither answered nor closed within 5 s".to_owned());
    }
    if out.bytes.is_empty() {
        return Ok(false);
    }
    let text: String = out.text().chars().take(400).collect();
    if !text.starts_with("HTTP/1.1 ") {
        return Err(format!("not an HTTP answer: {text:?}"));
    }
    if text.starts_with("HTTP/1.1 500") {
        return Err(format!("internal error: {text}"));
    }
    Ok(true)
}
