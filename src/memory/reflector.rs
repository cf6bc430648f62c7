//! The reflector: condenses a scope's observations into a new generation when they outgrow
//! `observation_tokens`, retrying with stronger compression while the result is still too big.
//! The replaced generation goes to the history table, never away.

use super::{clock, lines, reflect_key, Failed, Job, Memory, RunAs};
use crate::ir::tokens;
use crate::ir::Message;
use crate::store::{observations, Generation, StoreError};
use std::sync::Arc;

/// The system message; fixtures recognise reflector calls by its first sentence.
pub const INSTRUCTIONS: &str = "You are the reflector of memgate's observational memory. The observations you are given are the assistant's entire memory of its past conversations with this user; your reflection replaces them.

Rewrite them into a shorter set in the same format:
- Keep every fact about the user (identity, preferences, goals, people, dates) unless a newer observation replaces it; user assertions take precedence over anything else.
- Merge repeated or related lines; drop what no longer matters (superseded plans, small talk).
- Condense older observations more aggressively; keep more detail for recent ones.
- Keep dates and times, and the priority markers (🔴 high, 🟡 medium, 🟢 low, ✅ done).

Format:
<observations>
Date: Nov 22, 2026
* 🔴 (14:30) User is vegetarian; prefers concise answers
</observations>
<current-task>
Primary: what the user is working on right now (or \"none\")
</current-task>";

/// Stronger guidance per retry (OM's compression ladder).
const LADDER: [&str; 3] = [
    "## COMPRESSION REQUIRED\n\nThe observations are over their budget. Aim for an 8/10 detail level.",
    "## AGGRESSIVE COMPRESSION REQUIRED\n\nYour last reflection was still over budget. Aim for a 6/10 detail level: merge aggressively, keep only what the assistant will need.",
    "## CRITICAL COMPRESSION REQUIRED\n\nStill over budget. Aim for a 4/10 detail level: summarise the oldest 50-70% of observations into a few lines, drop procedural details, keep the user's facts and open goals.",
];

/// The upper end of the reflector's default `max_tokens` (see `Settings::output_bound`).
const OUTPUT_CAP: u64 = 16_384;

fn prompt(observations: &str, level: usize, refused: Option<&lines::Refusal>) -> Vec<Message> {
    let mut user = format!(
        "## OBSERVATIONS TO REFLECT ON\n\n{observations}\n\n---\n\nProduce a refined, condensed version that will become the assistant's entire memory going forward.\n\n{}",
        LADDER[level]
    );
    if let Some(why) = refused {
        user.push_str(&format!(
            "\n\n{}\n\nYour previous answer was refused ({why}). Answer with ONLY an <observations> block of dated lines, one fact per line as `* 🔴 (HH:MM) fact`, keeping every fact about the user, then a <current-task> block. Do not repeat these instructions.",
            super::observer::STRICT
        ));
    }
    super::instructed(INSTRUCTIONS, user)
}

/// Reflects the observations a thread feeds, if they are over its threshold and no
/// reflection of that scope is under way. Never fails: problems are logged and retried later.
pub(super) async fn run(memory: &Arc<Memory>, thread_id: &str, by: &RunAs) {
    let Some(thread) = memory
        .store
        .read()
        .ok()
        .and_then(|r| r.thread(&by.tenant, thread_id).ok().flatten())
    else {
        return;
    };
    let scope = memory.scope_key(&thread);
    let key = reflect_key(&scope);
    if memory.backing_off(&key) {
        return;
    }
    let lock = memory.lock(&key);
    let Some(_held) = lock.try_lock_arc() else { return };
    let (_, limit) = memory.thresholds_within(&thread, by.window);
    match reflect(memory, &scope, limit, by).await {
        Ok(()) => {
            memory.ran(&key, true);
            memory.models.ran(Job::Reflector, true);
        }
        Err(failed) => super::run_failed(memory, Job::Reflector, &key, &thread, scope, &failed).await,
    }
}

/// Walks the compression ladder until a reflection is within `limit`, keeping the smallest
/// answer that passes the checks (never one under the floor: see `lines::REFLECTION_FLOOR`).
/// A refused answer is asked again once with a stricter prompt, then the ladder goes on.
async fn reflect(memory: &Arc<Memory>, scope: &str, limit: u64, by: &RunAs) -> Result<(), Failed> {
    let Some(read) = memory
        .store
        .read()
        .and_then(|r| r.observations(scope))
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if read.tokens <= limit {
        return Ok(());
    }
    let s = &memory.settings;
    let model = s
        .reflector_model
        .clone()
        .or_else(|| s.observer_model.clone())
        .unwrap_or_else(|| by.model.clone());
    let today = clock::date_label(clock::now_ms());
    // Observations past what the reflector model reads at once (reflections failing while the
    // thread grew, or a smaller model since): the oldest part is condensed now, the rest kept
    // as it is for the next run.
    let room = super::Room::of(memory, &model).await;
    let fixed = tokens::text(INSTRUCTIONS) + tokens::text(LADDER[LADDER.len() - 1]) + super::PROMPT_FRAMING;
    let (input, rest) = match room.input(fixed) {
        Some(budget) if read.tokens > budget => lines::split_oldest(&read.text, budget),
        _ => (read.text.as_str(), String::new()),
    };
    let max_tokens = room.answer(s.output_bound(tokens::text(input), OUTPUT_CAP));
    // A part aims at what leaves the whole within `limit`, and at half its size at most: an
    // answer as long as its input would be accepted again and again, condensing nothing.
    let target = match rest.is_empty() {
        true => limit,
        false => limit.saturating_sub(tokens::text(&rest)).min(tokens::text(input) / 2),
    };
    let mut best = None::<lines::Parsed>;
    let mut run = Failed::from(String::new());
    let (mut level, mut why, mut retried) = (0, None, false);
    while level < LADDER.len() {
        let answer = run
            .call(memory, &model, prompt(input, level, why.as_ref()), by, max_tokens)
            .await?;
        let parsed = lines::read(&answer, &today);
        if let Err(refusal) = lines::check(&parsed.observations, input, INSTRUCTIONS, true) {
            log::warn!(target: "memgate::memory", "reflection at level {level} refused: {refusal}");
            run.refused += 1;
            why = Some(refusal);
            // The one stricter retry is at the same level; after it the ladder goes on.
            if !std::mem::replace(&mut retried, true) {
                continue;
            }
            level += 1;
            continue;
        }
        let size = tokens::text(&parsed.observations);
        if best.as_ref().is_none_or(|b| size < tokens::text(&b.observations)) {
            best = Some(parsed);
        }
        if size <= target {
            break;
        }
        log::info!(target: "memgate::memory", "reflection at level {level} is {size} tokens, over {target}; compressing harder");
        level += 1;
    }
    let Some(best) = best else {
        run.why = format!("{model} gave no usable reflection ({} refused)", run.refused);
        return Err(run);
    };
    let (spent, refused) = ((run.usage.prompt_tokens, run.usage.completion_tokens), run.refused);
    let scope = scope.to_owned();
    let record = memory
        .store
        .write(move |tx| {
            let mut record = observations::get(tx, &scope)?;
            // Observations appended while the reflector worked are kept after the reflection.
            let Some(appended) = record.text.strip_prefix(read.text.as_str()) else {
                return Err(StoreError::Conflict(
                    "observations were replaced during the reflection".to_owned(),
                ));
            };
            let appended = appended.trim_start_matches('\n').to_owned();
            let now = clock::now_ms();
            observations::archive(
                tx,
                &scope,
                &Generation {
                    generation: record.generation,
                    text: record.text.clone(),
                    tokens: record.tokens,
                    created_at: record.created_at,
                    replaced_at: now,
                },
            )?;
            record.text = lines::merge(&lines::merge(&best.observations, &rest), &appended);
            record.tokens = tokens::text(&record.text);
            record.current_task = best.current_task.or(record.current_task);
            record.generation += 1;
            record.created_at = now;
            record.updated_at = now;
            record.reflector_runs += 1;
            record.refused += refused;
            record.memory_prompt_tokens += spent.0;
            record.memory_completion_tokens += spent.1;
            observations::put(tx, &scope, &record)?;
            Ok(record)
        })
        .await
        .map_err(|e| Failed::from(e.to_string()))?;
    log::info!(
        target: "memgate::memory",
        "reflected {} observation tokens into generation {} of {} tokens with {model}; memory tokens {}+{}",
        read.tokens,
        record.generation,
        record.tokens,
        spent.0,
        spent.1
    );
    Ok(())
}
