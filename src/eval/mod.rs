//! `memgate eval longmemeval`: the LongMemEval benchmark run through memgate's own memory.
//!
//! For each question the runner creates one thread (and resource), imports the question's
//! history session by session in date order through the Memory API
//! (`POST /v1/memory/threads/{id}/messages`, each message with its session's `createdAt`), lets
//! the observer and reflector catch up after each session as they would between the visits of
//! a real user, asks the question through `/v1/chat/completions` with the memory headers and
//! only the question as the new message, and has a judge model grade the answer with
//! LongMemEval's prompts (`judge`). Every result is appended to the results file at once, so an
//! interrupted run resumes where it stopped.
//!
//! # Why history goes in through the Memory API
//!
//! The benchmark's questions are about what was said, the assistant's recorded turns included
//! (`single-session-assistant` asks what the assistant recommended). Sending each user turn to
//! a model would replace those turns with new answers and cost a model call per turn (about
//! 250 per question on LongMemEval_S); importing the recorded turns keeps the history as the
//! benchmark wrote it. Observation, reflection and context assembly are the same code either
//! way: the Memory API starts the observer when a thread passes its threshold, as a chat turn
//! does.

mod dataset;
mod gateway;
mod judge;
mod progress;

pub use dataset::{parse_date, Question};
use gateway::Gateway;
use http_types::Method;
use progress::{percent, Progress};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `memgate eval longmemeval` was asked to do. Its Debug hides the gateway key.
#[derive(Clone)]
pub struct Options {
    pub data: PathBuf,
    /// The model that answers, `provider/model`.
    pub model: String,
    /// The model that grades, `provider/model`.
    pub judge: String,
    /// Only the first N questions of the file.
    pub limit: Option<usize>,
    /// Questions in flight at once.
    pub concurrency: usize,
    pub out: PathBuf,
    /// A running gateway; `None` starts one in process from `config`.
    pub url: Option<String>,
    pub key: Option<String>,
    pub config: Option<PathBuf>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("data", &self.data)
            .field("model", &self.model)
            .field("judge", &self.judge)
            .field("limit", &self.limit)
            .field("concurrency", &self.concurrency)
            .field("out", &self.out)
            .field("url", &self.url)
            .field("key", &crate::config::Redacted(self.key.as_deref()))
            .field("config", &self.config)
            .finish()
    }
}

/// The tags the runner's requests carry, so `GET /v1/usage?group_by=tags` tells answers from
/// grading (memgate sorts and joins a request's tags with commas).
const ANSWER_TAGS: [&str; 2] = ["longmemeval", "longmemeval-answer"];
const JUDGE_TAGS: [&str; 2] = ["longmemeval", "longmemeval-judge"];

/// Runs the benchmark and prints the summary on stdout.
pub fn run(opts: Options) -> Result<(), String> {
    let mut questions = dataset::load(&opts.data)?;
    if let Some(n) = opts.limit {
        questions.truncate(n);
    }
    if let Some(q) = questions
        .iter()
        .find(|q| !q.is_abstention() && judge::prompt(&q.question_type, false, "", "", "").is_none())
    {
        return Err(format!(
            "question {} has question_type {:?}, which LongMemEval does not grade; expected one of {}",
            q.question_id,
            q.question_type,
            judge::TYPES
        ));
    }
    for q in &questions {
        q.sessions()?;
    }
    let earlier = Results::resume(&opts)?;
    let config = match &opts.url {
        Some(_) => None,
        None => Some(crate::config::Config::locate(opts.config.as_deref())?.0),
    };
    crate::runtime::block_on(async move {
        let gateway = match config {
            Some(c) => Gateway::start(c, &opts.model).await?,
            None => Gateway::remote(opts.url.as_deref().unwrap_or_default(), opts.key.clone()),
        };
        let gateway = Arc::new(gateway);
        let interrupted = async {
            match async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term]) {
                Ok(mut signals) => {
                    futures_lite::StreamExt::next(&mut signals).await;
                }
                // Ctrl-C then ends the process as usual; the results file is complete up to its
                // last line either way, only the temporary database stays behind.
                Err(e) => {
                    log::warn!("eval: no signal handlers ({e}); an interrupted run leaves its temporary database");
                    futures_lite::future::pending::<()>().await;
                }
            }
            Ok(None)
        };
        let evaluated = async { evaluate(&opts, &questions, &earlier, gateway.clone()).await.map(Some) };
        let records = match futures_lite::future::or(evaluated, interrupted).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Workers may still be running: what matters now is the results file
                // (complete up to its last line) and not leaving a database behind.
                gateway.discard();
                let done = Results::resume(&opts).map_or(0, |r| r.selected(&questions).len());
                return Err(format!(
                    "interrupted: {done} of {} questions are graded in {}; run the same command again to resume",
                    questions.len(),
                    opts.out.display()
                ));
            }
            Err(e) => {
                gateway.discard();
                return Err(e);
            }
        };
        // The workers are done, so this is the last handle.
        let gateway = Arc::try_unwrap(gateway).ok();
        let this_run = match &gateway {
            Some(g) => {
                g.settle().await;
                usage(g, records.1).await
            }
            None => Err("the gateway is still in use".to_owned()),
        };
        let all = Results::resume(&opts)?;
        print_summary(&opts, &questions, &all, records.0.len(), this_run);
        if let Some(g) = gateway {
            g.stop().await;
        }
        match records.2 {
            0 => Ok(()),
            n => Err(format!(
                "{n} question(s) failed and are not in {} (the reasons are above); run the same command again to retry them",
                opts.out.display()
            )),
        }
    })
}

/// One graded question as a line of the results file. `question_id`, `hypothesis` and
/// `autoeval_label` are the fields LongMemEval's own scripts read, so the file also feeds
/// `print_qa_metrics.py`.
type Record = Value;

/// What `evaluate` returns: this run's records, when it started (epoch seconds, for the usage
/// query) and how many questions failed.
type Evaluated = (Vec<Record>, u64, usize);

async fn evaluate(
    opts: &Options,
    questions: &[Question],
    earlier: &Results,
    gateway: Arc<Gateway>,
) -> Result<Evaluated, String> {
    let started = crate::clock::now_ms() / 1000;
    let todo: Vec<Question> = questions
        .iter()
        .filter(|q| !earlier.by_id.contains_key(&q.question_id))
        .cloned()
        .collect();
    let done = earlier.selected(questions);
    let correct = done.iter().filter(|r| label(r)).count();
    let mut progress = Progress::new(questions.len(), done.len(), correct);
    if !done.is_empty() {
        eprintln!(
            "resuming: {} of {} questions already graded in {}",
            done.len(),
            questions.len(),
            opts.out.display()
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.out)
        .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
    let (work_tx, work_rx) = async_channel::unbounded::<Question>();
    for q in todo {
        let _ = work_tx.try_send(q);
    }
    work_tx.close();
    let (done_tx, done_rx) = async_channel::unbounded::<(String, Result<Record, String>)>();
    let nonce = crate::clock::now_ms();
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            let (work, done, gateway, opts) = (work_rx.clone(), done_tx.clone(), gateway.clone(), opts.clone());
            crate::runtime::spawn(async move {
                while let Ok(q) = work.recv().await {
                    let result = one(&gateway, &opts, &q, nonce).await;
                    if done.send((q.question_id.clone(), result)).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(done_tx);
    let (mut records, mut failed) = (Vec::new(), 0);
    while let Ok((id, result)) = done_rx.recv().await {
        match result {
            Ok(record) => {
                let line = format!("{record}\n");
                file.write_all(line.as_bytes())
                    .and_then(|()| file.flush())
                    .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
                progress.finished(&id, Some(label(&record)));
                records.push(record);
            }
            Err(e) => {
                failed += 1;
                progress.finished(&id, None);
                progress.close();
                eprintln!("question {id} failed: {e}");
            }
        }
    }
    for w in workers {
        w.await;
    }
    progress.close();
    Ok((records, started, failed))
}

/// The memory headers of a question's thread.
fn memory_headers(thread: &str) -> Vec<(&'static str, String)> {
    vec![("x-thread-id", thread.to_owned()), ("x-resource-id", thread.to_owned())]
}

/// Replays, asks and grades one question.
async fn one(gw: &Gateway, opts: &Options, q: &Question, nonce: u64) -> Result<Record, String> {
    let start = Instant::now();
    // A fresh id per run: a resumed run against a running gateway must not find the half
    // history an interrupted run left.
    let thread = format!("longmemeval-{}-{nonce}", q.question_id);
    let path = format!("/v1/memory/threads/{}", encode(&thread));
    gw.expect(
        Method::Post,
        "/v1/memory/threads",
        &[],
        Some(&json!({"id": thread, "resourceId": thread, "title": format!("LongMemEval {}", q.question_id)})),
    )
    .await?;
    let mut observer_seen = true;
    for s in q.sessions()? {
        let at = crate::clock::iso8601(s.at);
        let messages: Vec<Value> = s
            .turns
            .iter()
            .filter(|t| !t.content.is_empty())
            .map(|t| json!({"role": t.role, "content": t.content, "createdAt": at}))
            .collect();
        if messages.is_empty() {
            continue;
        }
        let before = gw
            .expect(Method::Get, &format!("{path}/observations/record"), &[], None)
            .await?;
        gw.expect(
            Method::Post,
            &format!("{path}/messages"),
            &[],
            Some(&json!({"messages": messages})),
        )
        .await?;
        observer_seen = caught_up(gw, &path, &before, observer_seen).await?;
    }
    let ask = format!(
        "Current date: {}\nQuestion: {}\nAnswer from what you remember of our past conversations.",
        q.question_date, q.question
    );
    let answer = gw
        .expect(
            Method::Post,
            "/v1/chat/completions",
            &memory_headers(&thread),
            Some(&json!({"model": opts.model, "messages": [{"role": "user", "content": ask}], "tags": ANSWER_TAGS})),
        )
        .await?;
    let hypothesis = reply_text(&answer);
    let reference = q.answer_text();
    let prompt = judge::prompt(
        &q.question_type,
        q.is_abstention(),
        &q.question,
        &reference,
        &hypothesis,
    )
    .ok_or_else(|| format!("no judge prompt for {:?}", q.question_type))?;
    let graded = gw
        .expect(
            Method::Post,
            "/v1/chat/completions",
            &[],
            Some(
                &json!({"model": opts.judge, "messages": [{"role": "user", "content": prompt}],
                         "temperature": 0, "max_tokens": 10, "tags": JUDGE_TAGS}),
            ),
        )
        .await?;
    let verdict = reply_text(&graded);
    let record = gw
        .expect(Method::Get, &format!("{path}/observations/record"), &[], None)
        .await?;
    if !gw.in_process() {
        // Leave the user's gateway as it was; the results file keeps what matters.
        let _ = gw
            .call(
                Method::Delete,
                &format!("/v1/memory/resources/{}", encode(&thread)),
                &[],
                None,
            )
            .await;
    }
    let tokens = |v: &Value| json!({"prompt_tokens": v["usage"]["prompt_tokens"], "completion_tokens": v["usage"]["completion_tokens"]});
    Ok(json!({
        "question_id": q.question_id,
        "question_type": q.question_type,
        "abstention": q.is_abstention(),
        "question": q.question,
        "answer": q.answer,
        "hypothesis": hypothesis,
        "autoeval_label": {"model": opts.judge, "label": judge::verdict(&verdict)},
        "judge_reply": verdict,
        "model": opts.model,
        "sessions": q.haystack_sessions.len(),
        "usage": {
            "answer": tokens(&answer),
            "judge": tokens(&graded),
            "memory_tokens": record["memoryUsage"]["total_tokens"],
        },
        "observer_runs": record["observerRuns"],
        "reflector_runs": record["reflectorRuns"],
        "memory_failures": record["failures"],
        "seconds": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

/// Waits until the observer and reflector are done with what the last session added, as they
/// would be before a real user came back. `before` is the record from before the session was
/// stored: a run that should start but has not yet is waited for briefly. Returns whether a run
/// was seen to start when one was due (if never, the gateway has no `observer_model`, and
/// later sessions do not wait for one).
async fn caught_up(gw: &Gateway, path: &str, before: &Value, expect_runs: bool) -> Result<bool, String> {
    const START_WAIT: Duration = Duration::from_secs(2);
    let begun = Instant::now();
    let runs = |r: &Value| r["observerRuns"].as_u64().unwrap_or(0) + r["failures"].as_u64().unwrap_or(0);
    loop {
        let r = gw
            .expect(Method::Get, &format!("{path}/observations/record"), &[], None)
            .await?;
        let busy = r["isObserving"].as_bool() == Some(true) || r["isReflecting"].as_bool() == Some(true);
        let due =
            r["pendingMessageTokens"].as_u64() > r["config"]["messageTokens"].as_u64() && runs(&r) == runs(before);
        if busy {
            smol::Timer::after(Duration::from_millis(50)).await;
            continue;
        }
        if !due {
            return Ok(true);
        }
        if !expect_runs || begun.elapsed() > START_WAIT {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if expect_runs && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "eval: no observer run started after a session passed message_tokens; is [memory] observer_model \
                     set on the gateway (or is the observer failing)? Until it runs, history is observed when the \
                     question is asked"
                );
            }
            return Ok(false);
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

/// The text of a chat completion's first choice.
fn reply_text(v: &Value) -> String {
    crate::ir::content_text(&v["choices"][0]["message"]["content"])
        .trim()
        .to_owned()
}

fn label(r: &Record) -> bool {
    r["autoeval_label"]["label"].as_bool() == Some(true)
}

/// Percent-encodes a path segment (ids hold only what LongMemEval ids hold, but be safe).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The results file as read at start: graded questions by id.
#[derive(Debug, Default)]
struct Results {
    by_id: HashMap<String, Record>,
}

impl Results {
    /// Reads `--out` if it exists. A last line cut short by an interruption is dropped (and
    /// cut from the file, so the next line starts clean); its question runs again. Results of
    /// another answer model or judge are refused, so one file never mixes two runs.
    fn resume(opts: &Options) -> Result<Results, String> {
        let text = match std::fs::read_to_string(&opts.out) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Results::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", opts.out.display())),
        };
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&opts.out)
                .and_then(|f| f.set_len(whole as u64));
            f.map_err(|e| format!("cannot repair {}: {e}", opts.out.display()))?;
        }
        let mut by_id = HashMap::new();
        for (n, line) in text[..whole].lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: Value = serde_json::from_str(line).map_err(|e| {
                format!(
                    "{} line {}: not a result ({e}); use another --out",
                    opts.out.display(),
                    n + 1
                )
            })?;
            let Some(id) = r["question_id"].as_str() else {
                return Err(format!("{} line {}: no question_id", opts.out.display(), n + 1));
            };
            for (field, want) in [("model", &opts.model), ("judge", &opts.judge)] {
                let got = if field == "judge" {
                    &r["autoeval_label"]["model"]
                } else {
                    &r[field]
                };
                if got.as_str().is_some_and(|g| g != want) {
                    return Err(format!(
                        "{} holds results of {field} {got} (line {}), not {want}; use another --out to start afresh",
                        opts.out.display(),
                        n + 1
                    ));
                }
            }
            by_id.insert(id.to_owned(), r);
        }
        Ok(Results { by_id })
    }

    /// The records of the questions selected for this run, in the data's order.
    fn selected<'a>(&'a self, questions: &[Question]) -> Vec<&'a Record> {
        questions
            .iter()
            .filter_map(|q| self.by_id.get(&q.question_id))
            .collect()
    }
}

/// Tokens this run spent, from `GET /v1/usage` grouped by tags: answers, grading, and memory's
/// observer and reflector calls.
#[derive(Debug, Default)]
struct Spent {
    /// The start of the run, epoch seconds.
    from: u64,
    answer: (u64, u64),
    judge: (u64, u64),
    memory: u64,
}

async fn usage(gw: &Gateway, from: u64) -> Result<Spent, String> {
    let report = gw
        .expect(Method::Get, &format!("/v1/usage?from={from}&group_by=tags"), &[], None)
        .await?;
    let mut spent = Spent {
        from,
        ..Spent::default()
    };
    let (answer, judge) = (ANSWER_TAGS.join(","), JUDGE_TAGS.join(","));
    for row in report["data"].as_array().into_iter().flatten() {
        let n = |k: &str| row[k].as_u64().unwrap_or(0);
        let pair = (n("prompt_tokens"), n("completion_tokens"));
        match row["tags"].as_str() {
            Some(t) if t == answer => spent.answer = pair,
            Some(t) if t == judge => spent.judge = pair,
            _ => {}
        }
        spent.memory += n("memory_tokens");
    }
    Ok(spent)
}

fn print_summary(opts: &Options, questions: &[Question], all: &Results, ran: usize, spent: Result<Spent, String>) {
    let records = all.selected(questions);
    let correct = records.iter().filter(|r| label(r)).count();
    let mut out = format!(
        "LongMemEval {}: {} of {} questions graded ({ran} this run), model {}, judge {}\n",
        opts.data.file_name().unwrap_or_default().to_string_lossy(),
        records.len(),
        questions.len(),
        opts.model,
        opts.judge
    );
    out.push_str(&format!(
        "accuracy                    {:>7} ({correct}/{})\n",
        percent(correct, records.len()),
        records.len()
    ));
    let mut types: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &records {
        let t = types.entry(r["question_type"].as_str().unwrap_or("?")).or_default();
        t.0 += usize::from(label(r));
        t.1 += 1;
    }
    let abstention: Vec<_> = records
        .iter()
        .filter(|r| r["abstention"].as_bool() == Some(true))
        .collect();
    if !abstention.is_empty() {
        let ok = abstention.iter().filter(|r| label(r)).count();
        types.insert("(abstention, _abs)", (ok, abstention.len()));
    }
    for (t, (ok, n)) in types {
        out.push_str(&format!("  {t:<26}{:>7} ({ok}/{n})\n", percent(ok, n)));
    }
    let sum = |f: &dyn Fn(&Value) -> u64| records.iter().map(|r| f(r)).sum::<u64>();
    let tok = |r: &Value, k: &str| {
        r["usage"][k]["prompt_tokens"].as_u64().unwrap_or(0) + r["usage"][k]["completion_tokens"].as_u64().unwrap_or(0)
    };
    match spent {
        Ok(s) => {
            let when = match opts.url {
                None => "this run".to_owned(),
                // Usage is kept in hourly rows: the hour the run began is counted whole.
                Some(_) => format!(
                    "of this key since {}:00 UTC",
                    crate::clock::iso8601(s.from * 1000)
                        .replace('T', " ")
                        .get(..13)
                        .unwrap_or_default()
                ),
            };
            out.push_str(&format!(
                "tokens {when} (GET /v1/usage): answers {} ({} prompt + {} completion), judge {}, memory {} (observer and reflector)\n",
                s.answer.0 + s.answer.1,
                s.answer.0,
                s.answer.1,
                s.judge.0 + s.judge.1,
                s.memory
            ));
        }
        Err(e) => out.push_str(&format!("tokens this run: unknown ({e})\n")),
    }
    out.push_str(&format!(
        "tokens per results file ({} questions): answers {}, judge {}, memory {}\n",
        records.len(),
        sum(&|r| tok(r, "answer")),
        sum(&|r| tok(r, "judge")),
        sum(&|r| r["usage"]["memory_tokens"].as_u64().unwrap_or(0)),
    ));
    let failures = sum(&|r| r["memory_failures"].as_u64().unwrap_or(0));
    if failures > 0 {
        out.push_str(&format!(
            "memory: {failures} failed observer/reflector run(s) (memory_failures in the results; the gateway log says why)\n"
        ));
    }
    out.push_str(&format!("results: {}\n", opts.out.display()));
    let _ = std::io::stdout().write_all(out.as_bytes());
}
