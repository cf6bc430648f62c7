//! The observer: folds a thread's oldest unobserved messages into dated observations.
//!
//! Its prompt follows OM's observer (priorities, dates, times, assertions over questions,
//! a current task) in our own words. The transcript goes in the user message; the tail of the
//! existing observations goes with it so the model does not repeat them.

use super::{call_model, clock, lines, observe_key, reflector, tokens, RunAs, TAIL_SHARE};
use crate::app::App;
use crate::ir::Message;
use crate::metrics::MemoryJob;
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
        let text = super::content_text(&msg.content);
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

/// The newest whole lines of `text` within `budget` tokens.
fn newest(text: &str, budget: u64) -> &str {
    let mut start = text.len();
    let mut spent = 0;
    for line_start in text.rmatch_indices('\n').map(|(i, _)| i + 1).chain([0]) {
        spent += tokens::text(&text[line_start..start]);
        if spent > budget {
            break;
        }
        start = line_start;
    }
    &text[start..]
}

fn prompt(previous: &str, transcript: &str) -> Vec<Message> {
    let mut user = String::new();
    if !previous.is_empty() {
        user.push_str(&format!(
            "## Previous Observations\n\n{}\n\n---\n\nDo not repeat these existing observations. Your new observations will be appended to them.\n\n",
            newest(previous, PREVIOUS_TOKENS)
        ));
    }
    user.push_str(&format!(
        "## New Message History to Observe\n\n{transcript}\n---\n\n## Your Task\n\nExtract new observations from the message history above, in the format of your instructions."
    ));
    super::instructed(INSTRUCTIONS, user)
}

/// Observes a thread. A background run (`wait` false) gives way to a run already under way;
/// a blocking one waits for it, then observes only if still needed. Never fails: problems are
/// logged and retried by a later request.
pub(super) async fn run(app: &Arc<App>, thread_id: &str, by: &RunAs, wait: bool) {
    let key = observe_key(&by.tenant, thread_id);
    let lock = app.memory.lock(&key);
    let _held = if wait {
        lock.lock_arc().await
    } else {
        match lock.try_lock_arc() {
            Some(g) => g,
            None => return,
        }
    };
    match observe(app, thread_id, by).await {
        Ok(Some(scope_tokens)) => {
            app.memory.ran(&key, true);
            app.metrics.memory_run(MemoryJob::Observer, true);
            let reflect_over = scope_tokens.1;
            if scope_tokens.0 > reflect_over {
                reflector::run(app, thread_id, by).await;
            }
        }
        Ok(None) => {}
        Err(e) => {
            app.memory.ran(&key, false);
            app.metrics.memory_run(MemoryJob::Observer, false);
            log::warn!(target: "memgate::memory", "observer for thread {thread_id:?} failed (will retry later): {e}");
            let thread = app
                .store
                .read()
                .ok()
                .and_then(|r| r.thread(&by.tenant, thread_id).ok().flatten());
            if let Some(t) = thread {
                super::count_failure(app, &t, app.memory.scope_key(&t)).await;
            }
        }
    }
}

/// One observation; returns the scope's observation tokens and reflection threshold after it,
/// or `None` when there was nothing to observe.
async fn observe(app: &Arc<App>, thread_id: &str, by: &RunAs) -> Result<Option<(u64, u64)>, String> {
    let reader = app.store.read().map_err(|e| e.to_string())?;
    let Some(thread) = reader.thread(&by.tenant, thread_id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let (limit, reflect_over) = app.memory.thresholds_within(&thread, by.window);
    let unobserved = reader
        .messages_from(&thread, thread.cursor)
        .map_err(|e| e.to_string())?;
    let n = observe_count(&unobserved, limit);
    if n == 0 {
        return Ok(None);
    }
    let scope = app.memory.scope_key(&thread);
    let previous = reader
        .observations(&scope)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    drop(reader);
    let batch = &unobserved[..n];
    let model = app
        .memory
        .settings
        .observer_model
        .clone()
        .unwrap_or_else(|| by.model.clone());
    // mctx (issue 18): the batch shrinks to what fits the observer model's context window, and a
    // message larger than it is cut in the middle, so even that one is observed.
    let shown = tokens::text(newest(&previous.text, PREVIOUS_TOKENS));
    let batch = &super::observer_batch(app, &model, batch, shown).await[..];
    let n = batch.len();
    let (answer, usage) = call_model(app, &model, prompt(&previous.text, &transcript(batch)), by).await?;
    if answer.trim().is_empty() {
        return Err(format!("{model} answered with no text"));
    }
    let mut parsed = lines::parse(&answer, &clock::date_label(batch[0].created_at));
    if parsed.observations.is_empty() {
        // Off-format but not empty: keep what the model said rather than lose the messages.
        let kept: Vec<String> = answer
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("* 🟡 {}", l.trim()))
            .collect();
        parsed = lines::parse(&kept.join("\n"), &clock::date_label(batch[0].created_at));
    }
    let (cursor, next, born, tenant) = (
        thread.cursor,
        batch[n - 1].seq + 1,
        thread.created_at,
        thread.tenant.clone(),
    );
    let observed_tokens: u64 = batch.iter().map(|m| m.tokens).sum();
    let id = thread.id.clone();
    let record = app
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
            let now = clock::now_ms();
            let mut record = observations::get(tx, &scope)?;
            record.text = lines::merge(&record.text, &parsed.observations);
            record.tokens = tokens::text(&record.text);
            record.current_task = parsed.current_task.or(record.current_task);
            if record.created_at == 0 {
                record.created_at = now;
            }
            record.updated_at = now;
            record.last_observed_at = Some(now);
            record.observer_runs += 1;
            record.memory_prompt_tokens += usage.prompt_tokens;
            record.memory_completion_tokens += usage.completion_tokens;
            thread.cursor = next;
            threads::update(tx, &thread)?;
            observations::put(tx, &scope, &record)?;
            Ok(record)
        })
        .await
        .map_err(|e| e.to_string())?;
    log::info!(
        target: "memgate::memory",
        "observed {n} messages ({observed_tokens} tokens) of thread {thread_id:?} with {model}; observations now {} tokens; memory tokens {}+{}",
        record.tokens,
        usage.prompt_tokens,
        usage.completion_tokens
    );
    Ok(Some((record.tokens, reflect_over)))
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

    #[test]
    fn shows_only_the_newest_previous_observations() {
        let text = "Date: Nov 22, 2026\n* 🔴 (14:30) aaaa\n* 🔴 (14:31) bbbb";
        assert_eq!(newest(text, 1000), text);
        assert_eq!(newest(text, 8), "* 🔴 (14:31) bbbb");
    }
}
