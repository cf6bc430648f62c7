//! Buffered observation benchmark: latency of requests that cross the observation threshold
//! against those that do not, with a scripted observer that takes 2 s.
//!
//! `cargo bench --bench buffered` prints figures; it asserts nothing. The real `memgate`
//! binary in front of `memgate-mock --dir fixtures/local` (observer-060 answers after 2 s,
//! turn-090 answers chats at once), `[memory] message_tokens = 1000`. Six clients, each on
//! its own thread, send a turn a second (about 95 tokens with the answer), 40 turns each.
//! Before each turn a client reads the thread's record; a turn whose pending tokens plus its
//! own pass `message_tokens` is "crossing". Run twice: buffered observation on (the
//! default, every 20%) and off (`buffer_tokens = 0`, the observer starts only past the
//! threshold), p50/p99/max of each class printed.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Gateway, Mock};
use serde_json::json;
use std::time::{Duration, Instant};

const LIMIT: u64 = 1000;
const CLIENTS: usize = 6;
const TURNS: usize = 40;
const PACE: Duration = Duration::from_millis(1000);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Runs the load; returns the latencies of crossing and other turns, and how many waited.
fn scenario(buffer: &str) -> (Vec<Duration>, Vec<Duration>, usize) {
    let mock = Mock::start("fixtures/local");
    let gw = Gateway::start(&format!(
        "default_provider = \"local\"\n[memory]\nmessage_tokens = {LIMIT}\n{buffer}\n{}",
        common::provider("local", &mock, "")
    ));
    let results = std::sync::Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (gw, results) = (&gw, &results);
            s.spawn(move || {
                let thread = format!("bench-{c}");
                let h = [("x-thread-id", thread.as_str()), ("x-resource-id", "bench")];
                for i in 0..TURNS {
                    let started = Instant::now();
                    let record = gw.get(&format!("/v1/memory/threads/{thread}/observations/record"), &[]);
                    let pending = if record.status == 200 {
                        record.json()["pendingMessageTokens"].as_u64().unwrap_or(0)
                    } else {
                        0
                    };
                    let text = format!(
                        "bench turn {i}: today I fitted two more panels on the greenhouse and checked the seedlings on shelf {c}"
                    );
                    let new = memgate::ir::tokens::text(&text) + 4;
                    let sent = Instant::now();
                    let res = gw.post(
                        "/v1/chat/completions",
                        &h,
                        &json!({"model": "local/smollm2", "messages": [{"role": "user", "content": text}]}),
                    );
                    let took = sent.elapsed();
                    assert_eq!(res.status, 200, "{}", res.text());
                    let mut r = results.lock().unwrap();
                    if pending + new > LIMIT {
                        r.0.push(took);
                    } else {
                        r.1.push(took);
                    }
                    drop(r);
                    std::thread::sleep(PACE.saturating_sub(started.elapsed()));
                }
            });
        }
    });
    let waited = gw.log().matches("past blockAfter").count();
    let (mut crossing, mut other) = results.into_inner().unwrap();
    crossing.sort();
    other.sort();
    (crossing, other, waited)
}

fn main() {
    println!("buffered observation: scripted observer 2 s, message_tokens {LIMIT}, {CLIENTS} clients x {TURNS} turns every {} ms", PACE.as_millis());
    for (name, buffer) in [("buffered (default)", ""), ("unbuffered", "buffer_tokens = 0")] {
        let (crossing, other, waited) = scenario(buffer);
        let line = |class: &str, v: &[Duration]| {
            println!(
                "  {name:<19} {class:<9} n={:<4} p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms",
                v.len(),
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(v.last().copied().unwrap_or_default())
            )
        };
        line("crossing", &crossing);
        line("other", &other);
        println!(
            "  {name:<19} p99 crossing - p99 other: {} ms; requests that waited for the observer: {waited}",
            ms(percentile(&crossing, 0.99).saturating_sub(percentile(&other, 0.99)))
        );
    }
}
