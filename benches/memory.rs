//! Memory benchmark: context assembly on a big thread, and stored exchanges per second.
//!
//! `cargo bench --bench memory` prints figures; it asserts nothing. In process, on a real redb
//! file with durability on (every commit fsyncs), in a temp dir:
//!
//! 1. Context assembly for a thread of 1,000 stored messages whose oldest 980 are observed
//!    into 40k tokens of observations: the time `Memory::begin` takes (snapshot read, dedup,
//!    assembly), then the same plus serialising the upstream body, which is the extra work a
//!    request with memory does. Also the case of a client that resends its whole history.
//! 2. Stored exchanges (a user message and an answer, one durable write each) per second, with
//!    1, 16 and 64 concurrent writers, through the group-commit writer thread.

use memgate::clock;
use memgate::config::Config;
use memgate::ir::tokens;
use memgate::ir::{ChatRequest, Message};
use memgate::memory::{self, Memory, Payer, ThreadRef};
use memgate::runtime;
use memgate::store::{observations, threads, ObservationRecord, Scope, Store};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: usize = 1000;
const UNOBSERVED: usize = 20;
const OBSERVATION_TOKENS: u64 = 40_000;
const RUNS: usize = 2000;

fn message(role: &str, text: String) -> Message {
    serde_json::from_value(json!({"role": role, "content": text})).expect("message")
}

fn turn_text(i: usize) -> String {
    format!("Turn {i}: I am still working on the garden project; today I moved the tomatoes to the south bed and ordered two more bags of compost for the raised beds near the fence.")
}

fn seed(store: &Store, id: &str) -> (u64, usize) {
    let mut text = String::new();
    let mut line = 0;
    while tokens::text(&text) < OBSERVATION_TOKENS {
        if line % 40 == 0 {
            text.push_str(&format!(
                "Date: {}\n",
                clock::date_label(1_795_357_805_123 + line as u64 * 3_600_000)
            ));
        }
        text.push_str(&format!(
            "* 🟡 ({:02}:{:02}) User mentioned detail {line} of the garden project: bed sizes, seed varieties and watering times\n",
            line % 24,
            line % 60
        ));
        line += 1;
    }
    let (id, text2) = (id.to_owned(), text.clone());
    store
        .write_blocking(move |tx| {
            let mut t = threads::bind(tx, &id, memgate::store::OPEN_TENANT, "bench", clock::now_ms())?;
            let new = (0..MESSAGES)
                .map(|i| {
                    let m = message(if i % 2 == 0 { "user" } else { "assistant" }, turn_text(i));
                    memory::to_store(m, false)
                })
                .collect();
            threads::append(tx, &mut t, new, clock::now_ms())?;
            t.cursor = (MESSAGES - UNOBSERVED) as u64;
            threads::update(tx, &t)?;
            let record = ObservationRecord {
                tokens: tokens::text(&text2),
                text: text2,
                ..Default::default()
            };
            observations::put(
                tx,
                &Scope::Thread {
                    tenant: memgate::store::OPEN_TENANT,
                    id: &id,
                }
                .key(),
                &record,
            )
        })
        .expect("seed");
    (tokens::text(&text), text.len())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, mut micros: Vec<f64>) -> f64 {
    micros.sort_by(f64::total_cmp);
    let p50 = percentile(&micros, 0.5);
    println!(
        "{name:<58} p50 {p50:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        percentile(&micros, 0.9),
        percentile(&micros, 0.99)
    );
    p50
}

fn assembly(
    app: &Arc<memgate::app::App>,
    payer: &Payer,
    at: &ThreadRef,
    client: &[Message],
    serialise: bool,
) -> Vec<f64> {
    (0..RUNS + 100)
        .map(|_| {
            let start = Instant::now();
            let (messages, turn) = runtime::block_on(Memory::begin(
                &app.memory,
                payer,
                at,
                client.to_vec(),
                "openai/gpt-4o-mini",
                &Default::default(),
            ))
            .expect("begin");
            if serialise {
                let req = ChatRequest {
                    model: "gpt-4o-mini".into(),
                    messages,
                    stream: None,
                    rest: Default::default(),
                };
                std::hint::black_box(serde_json::to_vec(&req).expect("serialise"));
            }
            let took = start.elapsed().as_secs_f64() * 1e6;
            drop(turn);
            took
        })
        .skip(100)
        .collect()
}

fn throughput(store: &Store, writers: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            runtime::spawn(async move {
                let id = format!("load-{writers}-{w}");
                let bind = id.clone();
                store
                    .write(move |tx| threads::bind(tx, &bind, memgate::store::OPEN_TENANT, "bench", clock::now_ms()))
                    .await
                    .expect("bind");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let exchange = vec![message("user", format!("note {i}")), message("assistant", "OK.".into())]
                        .into_iter()
                        .map(|m| memory::to_store(m, false))
                        .collect();
                    let id = id.clone();
                    store
                        .write(move |tx| {
                            let mut t = threads::owned(tx, memgate::store::OPEN_TENANT, &id)?;
                            threads::append(tx, &mut t, exchange, clock::now_ms())
                        })
                        .await
                        .expect("append");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(3));
    let rate = (done.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        runtime::block_on(t);
    }
    rate
}

fn main() {
    let dir = std::env::temp_dir().join(format!("memgate-bench-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).expect("open store");
    let (obs_tokens, obs_bytes) = seed(&store, "big");
    let config =
        Config::parse("[providers.openai]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n").expect("config");
    let app =
        Arc::new(memgate::app::App::new(&config, "127.0.0.1:4000".parse().expect("addr"), store.clone()).expect("app"));
    let payer = Payer {
        tenant: memgate::store::OPEN_TENANT.into(),
        limits: Default::default(),
    };
    let at = ThreadRef {
        thread: "big".into(),
        resource: "bench".into(),
    };
    println!(
        "memgate memory benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "thread: {MESSAGES} messages ({} unobserved), observations {obs_tokens} tokens ({} KiB)\n",
        UNOBSERVED,
        obs_bytes / 1024
    );
    let new = vec![message("user", "What did I move to the south bed?".into())];
    let plain = report(
        "context assembly (Memory::begin), new message only",
        assembly(&app, &payer, &at, &new, false),
    );
    let with_body = report(
        "  + serialising the upstream body",
        assembly(&app, &payer, &at, &new, true),
    );
    let mut history: Vec<Message> = (0..MESSAGES)
        .map(|i| message(if i % 2 == 0 { "user" } else { "assistant" }, turn_text(i)))
        .collect();
    history.extend(new.iter().cloned());
    report(
        "context assembly, client resends all 1,000 messages",
        assembly(&app, &payer, &at, &history, false),
    );
    let empty_req = ChatRequest {
        model: "gpt-4o-mini".into(),
        messages: new.clone(),
        stream: None,
        rest: Default::default(),
    };
    let baseline: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(serde_json::to_vec(&empty_req).expect("serialise"));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let base = report("serialising a memory-less body (baseline)", baseline);
    println!(
        "\nadded by memory, p50: {:.3} ms (assembly {:.3} ms)\n",
        (with_body - base) / 1000.0,
        plain / 1000.0
    );
    for writers in [1, 16, 64] {
        println!(
            "stored exchanges/s, {writers:>2} concurrent writers, durable: {:>8.0}",
            throughput(&store, writers)
        );
    }
    let size = std::fs::metadata(dir.join("memgate.redb")).map_or(0, |m| m.len());
    println!("\nredb file: {:.1} MiB", size as f64 / 1048576.0);
    drop((app, store));
    let _ = std::fs::remove_dir_all(&dir);
}
