//! The observer: folds a thread's oldest unobserved messages into dated observations.
//!
//! Its prompt follows OM's observer (priorities, dates, times, assertions over questions,
//! a current task) in our own words. The transcript goes in the user message; the tail of the
//! existing observations goes with it so the model does not repeat them.

use super::{clock, context, lines, observe_key, reflector, Failed, Job, Memory, RunAs, TAIL_SHARE};
use crate::ir::tokens;
use crate::ir::{Message, Usage};
use crate::store::{observations, threads, StoreError, StoredMessage, ThreadRecord};
use std::sync::Arc;

/// The system message; fixtures recognise observer calls by its first sentence.
pub const INSTRUCTIONS: &str = "You are the observer of memgate's observational memory. Your observations will be the ONLY information the assistant keeps about the conversation below once its messages leave the context, so record everything the assistant will need later.

What to record:
- Facts the user states about themselves, their preferences, their goals, people and things in their life, with specifics (names, numbers, dates, places).
- Decisions made, plans, commitments, and how a task progressed; results of tool calls that matter later.
- What the assistant told or recommended, briefly, when the user may refer back to it.
- Record assertions, not questions: \"What should I cook?\" is only worth noting as an interest; \"I am vegetarian\" is a fact.
- When something changes, say what it replaces (\"User now lives in Lyon (moved from Paris)\").
- When the user mentions when something happened (\"last Tuesday\", \"in 2019\"), keep the reference and your estimate of the date.

Priorities (start every line with one):
- 🔴 high: explicit user facts, preferences, unresolved goals, critical context
- 🟡 medium: project details, learned information, tool results
- 🟢 low: minor details, uncertain observations
- ✅ done: a task finished or a question fully answered

Format: group observations by date; within a date, in the order things happened, each with its 24-hour time:

<observations>
Date: Nov 22, 2026
* 🔴 (14:30) User stated they are vegetarian
* 🟡 (14:31) User is planning a trip to Japan in April (estimated: April 2027)
</observations>
<current-task>
Primary: what the user is working on right now (or \"none\")
</current-task>

Write only new observations (earlier ones are kept). Be terse: one fact per line, no commentary.";

/// The part of existing observations shown to the observer, so it does not repeat them.
const PREVIOUS_TOKENS: u64 = 2000;

/// How many of the oldest unobserved messages to observe: all but a raw tail of the newest
/// (up to `TAIL_SHARE` of the threshold). The tail never starts with a tool result, which
/// without its call would be refused upstream.
pub(super) fn observe_count(unobserved: &[StoredMessage], limit: u64) -> usize {
    let budget = (limit as f64 * TAIL_SHARE) as u64;
    let mut tail_tokens = 0;
    let mut boundary = unobserved.len();
    while boundary > 0 && tail_tokens + unobserved[boundary - 1].tokens <= budget {
        boundary -= 1;
        tail_tokens += unobserved[boundary].tokens;
    }
    while boundary < unobserved.len() && unobserved[boundary].message.role == "tool" {
        boundary += 1;
    }
    boundary
}

/// The transcript the observer reads: a date line when the day changes, then
/// `Role (HH:MM): text` lines, tool calls and results on their own lines.
pub(super) fn transcript(messages: &[StoredMessage]) -> String {
    let mut out = String::new();
    let mut day = String::new();
    for m in messages {
        let date = clock::date_label(m.created_at);
        if date != day {
            out.push_str(&format!("{}:\n", date.replace(',', "")));
            day = date;
        }
        let time = clock::time_label(m.created_at);
        let msg = &m.message;
        let text = crate::ir::content_text(&msg.content);
        let cut = if m.incomplete { " [answer cut short]" } else { "" };
        let label = match msg.role.as_str() {
            "tool" => "Tool Result".to_owned(),
            role => {
                let mut chars = role.chars();
                chars
                    .next()
                    .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
            }
        };
        if !text.is_empty() || msg.tool_calls.is_none() {
            out.push_str(&format!("{label} ({time}): {text}{cut}\n"));
        }
        for call in msg.tool_calls.iter().flatten() {
            out.push_str(&format!(
                "Tool Call {} ({time}): {}\n",
                call.function.name, call.function.arguments
            ));
        }
    }
    out
}

/// Added to the prompt after a refused answer, with the reason; fixtures recognise the retry
/// by its heading.
pub const STRICT: &str = "## STRICT FORMAT REQUIRED";

/// The upper end of the observer's default `max_tokens` (see `Settings::output_bound`).
const OUTPUT_CAP: u64 = 4096;

/// The observer's prompt: `shown`, the newest previous observations, and the transcript.
fn prompt(shown: &str, transcript: &str, refused: Option<&lines::Refusal>) -> Vec<Message> {
    let mut user = String::new();
    if !shown.is_empty() {
        user.push_str(&format!(
            "## Previous Observations\n\n{shown}\n\n---\n\nDo not repeat these existing observations. Your new observations will be appended to them.\n\n"
        ));
    }
    user.push_str(&format!(
        "## New Message History to Observe\n\n{transcript}\n---\n\n## Your Task\n\nExtract new observations from the message history above, in the format of your instructions."
    ));
    if let Some(why) = refused {
        user.push_str(&format!(
            "\n\n{STRICT}\n\nYour previous answer was refused ({why}). Answer with ONLY an <observations> block of dated lines about the message history above, one fact per line as `* 🔴 (HH:MM) fact`, then a <current-task> block. Do not greet, do not ask for input, do not repeat these instructions."
        ));
    }
    super::instructed(INSTRUCTIONS, user)
}

/// Observations of messages `from..through` of a thread, made ahead of its threshold
/// (buffered observation) or for it, not yet in the record.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// The cursor the chunk follows on from (the thread's cursor, or the previous chunk's
    /// `through`), not its first message's seq: messages deleted in between leave a gap.
    from: u64,
    through: u64,
    /// How many messages it observed: fewer stored at commit means some were deleted meanwhile.
    messages: u64,
    /// The thread's `created_at`: the same id deleted and created again is another thread.
    born: u64,
    parsed: lines::Parsed,
    usage: Usage,
    refused: u64,
}

/// What an observer run does next for a thread.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    Idle,
    /// Past the threshold with buffered observations: put them in the record (no model call).
    Activate,
    /// Past the threshold (the observer fell behind, or buffering is off): observe now.
    Observe,
    /// A buffer step of new messages ahead of the threshold: observe them, keep the result.
    Buffer,
}

/// The thread's buffered chunks that still apply: a contiguous run from its cursor.
fn chunks(memory: &Memory, thread: &ThreadRecord) -> Vec<Chunk> {
    let key = observe_key(&thread.tenant, &thread.id);
    let mut all = memory.buffered.lock().unwrap_or_else(|p| p.into_inner());
    let Some(list) = all.get_mut(&key) else {
        return Vec::new();
    };
    list.retain(|c| c.born == thread.created_at && c.from >= thread.cursor);
    let mut next = thread.cursor;
    let contiguous = list
        .iter()
        .take_while(|c| std::mem::replace(&mut next, c.through) == c.from)
        .count();
    list.truncate(contiguous);
    if list.is_empty() {
        all.remove(&key);
        return Vec::new();
    }
    list.clone()
}

/// The messages a buffer step would observe: after the buffered ones, up to the raw tail.
fn buffer_batch(unobserved: &[StoredMessage], limit: u64, after: u64) -> &[StoredMessage] {
    let end = observe_count(unobserved, limit);
    let start = unobserved[..end].iter().position(|m| m.seq >= after).unwrap_or(end);
    &unobserved[start..end]
}

/// Decides the next step for a thread whose unobserved messages are `unobserved`, with
/// `incoming` tokens of a request's new messages about to join them, for a model of context
/// window `window` (which caps the thresholds).
pub(super) fn next_step(
    memory: &Memory,
    thread: &ThreadRecord,
    unobserved: &[StoredMessage],
    incoming: u64,
    window: Option<u64>,
) -> Step {
    let (limit, _) = memory.thresholds_within(thread, window);
    let buffered = chunks(memory, thread);
    if super::pending_tokens(unobserved) + incoming > limit {
        return if buffered.is_empty() {
            Step::Observe
        } else {
            Step::Activate
        };
    }
    let share = memory.settings.buffer_share;
    if share <= 0.0 {
        return Step::Idle;
    }
    let after = buffered.last().map_or(thread.cursor, |c| c.through);
    let step = ((limit as f64 * share) as u64).max(1);
    if super::pending_tokens(buffer_batch(unobserved, limit, after)) >= step {
        Step::Buffer
    } else {
        Step::Idle
    }
}

/// Observes a thread. A background run (`wait` false) gives way to a run already under way;
/// a blocking one waits for it, then observes only if still needed. Never fails: problems are
/// logged, counted in the record and retried by a later request.
pub(super) async fn run(memory: &Arc<Memory>, thread_id: &str, by: &RunAs, wait: bool) {
    let key = observe_key(&by.tenant, thread_id);
    let lock = memory.lock(&key);
    let _held = if wait {
        lock.lock_arc().await
    } else {
        match lock.try_lock_arc() {
            Some(g) => g,
            // A run is under way (perhaps a slow buffer step): observations already buffered
            // need no model call, so they are activated now rather than after it.
            None => return activate_ready(memory, thread_id, by, 0).await,
        }
    };
    // Activate, observe what is past the threshold, buffer ahead: a few steps at most, each
    // read afresh, so messages that came in meanwhile are seen.
    for _ in 0..4 {
        let thread = match memory.store.read().and_then(|r| r.thread(&by.tenant, thread_id)) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                log::warn!(target: "memgate::memory", "observer for thread {thread_id:?}: {e}");
                return;
            }
        };
        let outcome = step(memory, &thread, by).await;
        let reflect = match outcome {
            Ok(Stepped::Idle) => return,
            Ok(Stepped::Buffered) => {
                memory.models.ran(Job::Observer, true);
                false
            }
            Ok(Stepped::Committed { tokens, observed }) => {
                memory.ran(&key, true);
                memory.ran(&super::block_key(&thread.tenant, &thread.id), true);
                if observed {
                    memory.models.ran(Job::Observer, true);
                }
                tokens > memory.thresholds_within(&thread, by.window).1
            }
            Err(failed) => {
                let scope = memory.scope_key(&thread);
                super::run_failed(memory, Job::Observer, &key, &thread, scope, &failed).await;
                return;
            }
        };
        if reflect {
            reflector::run(memory, thread_id, by).await;
        }
    }
}

/// Activates the thread's buffered observations if it is past its threshold (counting
/// `incoming` tokens of a request about to be sent); needs no run lock (the commit checks the
/// cursor). Then starts a reflection if the observations outgrew their threshold.
pub(super) async fn activate_ready(memory: &Arc<Memory>, thread_id: &str, by: &RunAs, incoming: u64) {
    let Ok(reader) = memory.store.read() else { return };
    let Ok(Some(thread)) = reader.thread(&by.tenant, thread_id) else {
        return;
    };
    let Ok(unobserved) = reader.messages_from(&thread, thread.cursor) else {
        return;
    };
    drop(reader);
    if next_step(memory, &thread, &unobserved, incoming, by.window) != Step::Activate {
        return;
    }
    match commit(memory, &thread, memory.scope_key(&thread), chunks(memory, &thread)).await {
        // In the background: a request may be waiting on this activation.
        Ok(tokens) if tokens > memory.thresholds_within(&thread, by.window).1 => {
            let (m, id, by) = (memory.clone(), thread_id.to_owned(), by.clone());
            memory
                .background()
                .spawn(async move { reflector::run(&m, &id, &by).await });
        }
        Ok(_) => {}
        // Another run committed first: its own outcome stands.
        Err(f) => log::debug!(target: "memgate::memory", "activation for thread {thread_id:?}: {}", f.why),
    }
}

/// How many buffered observations (and of how many messages) wait for the threshold.
pub(super) fn buffered(memory: &Memory, thread: &ThreadRecord) -> (usize, u64) {
    let c = chunks(memory, thread);
    (c.len(), c.last().map_or(0, |l| l.through - thread.cursor))
}

enum Stepped {
    Idle,
    Buffered,
    /// Observations went into the record; `observed`: a model call made them just now.
    Committed {
        tokens: u64,
        observed: bool,
    },
}

async fn step(memory: &Arc<Memory>, thread: &ThreadRecord, by: &RunAs) -> Result<Stepped, Failed> {
    let reader = memory.store.read().map_err(|e| e.to_string())?;
    let unobserved = reader.messages_from(thread, thread.cursor).map_err(|e| e.to_string())?;
    let scope = memory.scope_key(thread);
    let previous = reader
        .observations(&scope)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    drop(reader);
    let (limit, _) = memory.thresholds_within(thread, by.window);
    let buffered = chunks(memory, thread);
    match next_step(memory, thread, &unobserved, 0, by.window) {
        Step::Idle => Ok(Stepped::Idle),
        Step::Activate => {
            let tokens = commit(memory, thread, scope, buffered).await?;
            Ok(Stepped::Committed {
                tokens,
                observed: false,
            })
        }
        Step::Observe => {
            let n = observe_count(&unobserved, limit);
            if n == 0 {
                return Ok(Stepped::Idle);
            }
            let chunk = observe(memory, thread, &previous.text, thread.cursor, &unobserved[..n], by).await?;
            let tokens = commit(memory, thread, scope, vec![chunk]).await?;
            Ok(Stepped::Committed { tokens, observed: true })
        }
        Step::Buffer => {
            let after = buffered.last().map_or(thread.cursor, |c| c.through);
            let batch = buffer_batch(&unobserved, limit, after);
            let seen = buffered
                .iter()
                .fold(previous.text, |text, c| lines::merge(&text, &c.parsed.observations));
            let chunk = observe(memory, thread, &seen, after, batch, by).await?;
            let key = observe_key(&thread.tenant, &thread.id);
            let mut all = memory.buffered.lock().unwrap_or_else(|p| p.into_inner());
            let list = all.entry(key).or_default();
            // Only if it still follows on (an activation or a delete meanwhile starts afresh).
            if list.last().map_or(thread.cursor, |c| c.through) == chunk.from {
                list.push(chunk);
            }
            Ok(Stepped::Buffered)
        }
    }
}

/// One observer call on `batch` (the messages following cursor `from`), its answer checked;
/// a refused answer is asked again once, with a stricter prompt.
async fn observe(
    memory: &Arc<Memory>,
    thread: &ThreadRecord,
    previous: &str,
    from: u64,
    batch: &[StoredMessage],
    by: &RunAs,
) -> Result<Chunk, Failed> {
    let model = memory
        .settings
        .observer_model
        .clone()
        .unwrap_or_else(|| by.model.clone());
    // The previous observations shown and the batch shrink to what fits the observer model's
    // window, and a message larger than it is cut in the middle, so even that one is observed.
    let room = super::Room::of(memory, &model).await;
    let shown = lines::newest(previous, PREVIOUS_TOKENS.min(room.observations()));
    let fixed = tokens::text(INSTRUCTIONS) + tokens::text(&shown) + super::PROMPT_FRAMING;
    let fitted = match room.input(fixed) {
        Some(budget) => context::fit_batch(batch, budget),
        None => batch.to_vec(),
    };
    let batch = &fitted[..];
    if batch.is_empty() {
        return Err(Failed::from(format!(
            "nothing of thread {:?} fits {model}'s window",
            thread.id
        )));
    }
    let input = transcript(batch);
    let date = clock::date_label(batch[0].created_at);
    let max_tokens = room.answer(memory.settings.output_bound(tokens::text(&input), OUTPUT_CAP));
    let mut failed = Failed::from(String::new());
    let mut why = None;
    loop {
        let answer = failed
            .call(memory, &model, prompt(&shown, &input, why.as_ref()), by, max_tokens)
            .await?;
        let parsed = lines::read(&answer, &date);
        let refusal = match lines::check(&parsed.observations, &input, INSTRUCTIONS, false) {
            Ok(()) => {
                return Ok(Chunk {
                    from,
                    through: batch[batch.len() - 1].seq + 1,
                    messages: batch.len() as u64,
                    born: thread.created_at,
                    parsed,
                    usage: failed.usage,
                    refused: failed.refused,
                })
            }
            Err(r) => r,
        };
        failed.refused += 1;
        log::warn!(target: "memgate::memory", "observer answer for thread {:?} refused: {refusal}", thread.id);
        if failed.refused >= 2 {
            failed.why = format!("{model}'s answers were refused twice, last: {refusal}");
            return Err(failed);
        }
        why = Some(refusal);
    }
}

/// Puts `chunks` (contiguous, the first starting at the thread's cursor) in the record and
/// moves the cursor past them, in one commit; returns the scope's observation tokens. If any of
/// their messages was deleted meanwhile, nothing is written and the thread's buffered chunks
/// are dropped: what was deleted never reaches the record.
async fn commit(memory: &Arc<Memory>, thread: &ThreadRecord, scope: String, chunks: Vec<Chunk>) -> Result<u64, Failed> {
    let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
        return Ok(0);
    };
    let (cursor, next) = (first.from, last.through);
    let (id, tenant, born) = (thread.id.clone(), thread.tenant.clone(), thread.created_at);
    let n = chunks.len() as u64;
    let observed: u64 = chunks.iter().map(|c| c.messages).sum();
    let record = memory
        .store
        .write(move |tx| {
            // The same id deleted and created again meanwhile is another thread.
            let same = |t: &ThreadRecord| t.created_at == born;
            let Some(mut thread) = threads::get(tx, &tenant, &id)?.filter(same) else {
                return Err(StoreError::NotFound(format!(
                    "thread {id:?} was deleted while being observed"
                )));
            };
            if thread.cursor != cursor {
                return Err(StoreError::Conflict(format!("thread {id:?} was observed meanwhile")));
            }
            if threads::count_messages(tx, &thread, cursor..next)? != observed {
                return Ok(None);
            }
            let now = clock::now_ms();
            let mut record = observations::get(tx, &scope)?;
            for c in chunks {
                record.text = lines::merge(&record.text, &c.parsed.observations);
                record.current_task = c.parsed.current_task.or(record.current_task);
                record.memory_prompt_tokens += c.usage.prompt_tokens;
                record.memory_completion_tokens += c.usage.completion_tokens;
                record.refused += c.refused;
            }
            record.tokens = tokens::text(&record.text);
            if record.created_at == 0 {
                record.created_at = now;
            }
            record.updated_at = now;
            record.last_observed_at = Some(now);
            record.observer_runs += n;
            thread.cursor = next;
            threads::update(tx, &thread)?;
            observations::put(tx, &scope, &record)?;
            Ok(Some(record))
        })
        .await
        .map_err(|e| e.to_string())?;
    let Some(record) = record else {
        memory.drop_buffered(&thread.tenant, &thread.id);
        return Err(Failed::from(format!(
            "messages of thread {:?} were deleted while being observed",
            thread.id
        )));
    };
    log::info!(
        target: "memgate::memory",
        "observed messages {cursor}..{next} of thread {:?} ({n} observer answers); observations now {} tokens",
        thread.id,
        record.tokens,
    );
    Ok(record.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn stored(seq: u64, role: &str, content: Value, tokens: u64) -> StoredMessage {
        let mut m = json!({"role": role, "content": content});
        if role == "tool" {
            m["tool_call_id"] = json!("c1");
        }
        StoredMessage {
            id: format!("m{seq}"),
            seq,
            message: serde_json::from_value(m).unwrap(),
            tokens,
            created_at: 1_795_357_805_123 + seq * 60_000,
            incomplete: false,
        }
    }

    /// Memory on a fresh database with `threads` (tenant t_a, thread id → resource), each
    /// with two stored messages (seqs 0 and 1) and one buffered chunk covering them.
    fn memory_with_buffered(name: &str, threads: &[(&'static str, &'static str)]) -> (Arc<Memory>, std::path::PathBuf) {
        let (memory, dir) = super::super::scripted::memory(name, "", super::super::scripted::Scripted::new([]));
        for &(id, resource) in threads {
            let thread = memory
                .store
                .write_blocking(move |tx| {
                    let mut t = threads::bind(tx, id, "t_a", resource, 1)?;
                    let said = ["My name is Alex", "Hello Alex"].map(|text| {
                        let m = serde_json::from_value(json!({"role": "user", "content": text})).unwrap();
                        super::super::to_store(m, false)
                    });
                    threads::append(tx, &mut t, said.into(), 1)?;
                    Ok(t)
                })
                .unwrap();
            let chunk = Chunk {
                from: 0,
                through: 2,
                messages: 2,
                born: thread.created_at,
                parsed: lines::read("* 🔴 (14:30) User stated their name is Alex", "Nov 22, 2026"),
                usage: Usage::default(),
                refused: 0,
            };
            let mut all = memory.buffered.lock().unwrap();
            all.insert(observe_key("t_a", id), vec![chunk]);
        }
        (memory, dir)
    }

    fn buffered_keys(memory: &Memory) -> Vec<String> {
        let mut keys: Vec<String> = memory.buffered.lock().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn deleting_messages_threads_or_resources_drops_their_buffered_observations() {
        let (memory, dir) = memory_with_buffered(
            "drop-buffered",
            &[("a", "alex"), ("b", "alex"), ("c", "sam"), ("d", "sam")],
        );
        smol::block_on(async {
            super::super::delete_thread(&memory, "t_a", "a").await.unwrap();
            assert_eq!(buffered_keys(&memory), ["b", "c", "d"].map(|id| observe_key("t_a", id)));
            super::super::erase_resource(&memory, "t_a", "alex").await.unwrap();
            assert_eq!(buffered_keys(&memory), ["c", "d"].map(|id| observe_key("t_a", id)));
            let thread = memory.store.read().unwrap().thread("t_a", "c").unwrap().unwrap();
            let first = memory.store.read().unwrap().messages_from(&thread, 0).unwrap()[0]
                .id
                .clone();
            super::super::delete_messages(&memory, "t_a", "c", vec![first])
                .await
                .unwrap();
            assert_eq!(buffered_keys(&memory), [observe_key("t_a", "d")]);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_commit_refuses_chunks_whose_messages_were_deleted_meanwhile() {
        let (memory, dir) = memory_with_buffered("commit-deleted", &[("a", "alex")]);
        let thread = memory.store.read().unwrap().thread("t_a", "a").unwrap().unwrap();
        let chunks = chunks(&memory, &thread);
        assert_eq!(chunks.len(), 1);
        // Deleted behind the memory API's back, as a delete racing an activation would be.
        let first = memory.store.read().unwrap().messages_from(&thread, 0).unwrap()[0]
            .id
            .clone();
        memory
            .store
            .write_blocking(move |tx| threads::delete_messages(tx, &mut threads::owned(tx, "t_a", "a")?, &[first]))
            .unwrap();
        let scope = memory.scope_key(&thread);
        let failed = smol::block_on(commit(&memory, &thread, scope.clone(), chunks)).unwrap_err();
        assert!(failed.why.contains("deleted while being observed"), "{}", failed.why);
        let reader = memory.store.read().unwrap();
        assert_eq!(reader.observations(&scope).unwrap().unwrap_or_default().text, "");
        assert_eq!(reader.thread("t_a", "a").unwrap().unwrap().cursor, 0);
        drop(reader);
        assert!(buffered_keys(&memory).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keeps_a_tail_that_does_not_start_with_a_tool_result() {
        let msgs: Vec<StoredMessage> = (0..10).map(|i| stored(i, "user", json!("x"), 10)).collect();
        // Budget 20% of 100 = 20 tokens: the last two stay raw.
        assert_eq!(observe_count(&msgs, 100), 8);
        let mut msgs = msgs;
        msgs[8] = stored(8, "tool", json!("result"), 10);
        assert_eq!(observe_count(&msgs, 100), 9);
        // One huge newest message: everything is observed.
        msgs[9].tokens = 1000;
        assert_eq!(observe_count(&msgs, 100), 10);
    }

    #[test]
    fn transcript_has_dates_roles_times_and_tools() {
        let mut call = stored(1, "assistant", Value::Null, 5);
        call.message = serde_json::from_value(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}))
        .unwrap();
        let msgs = [
            stored(0, "user", json!("My name is Alex"), 5),
            call,
            stored(2, "tool", json!("sunny"), 5),
            stored(
                3,
                "user",
                json!([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]),
                5,
            ),
        ];
        assert_eq!(
            transcript(&msgs),
            "Nov 22 2026:\nUser (14:30): My name is Alex\nTool Call get_weather (14:31): {\"city\":\"Paris\"}\nTool Result (14:32): sunny\nUser (14:33): look [image]\n"
        );
    }
}
