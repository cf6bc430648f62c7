//! Context assembly: what goes upstream for a request with memory on.
//!
//! Order: the client's own system messages; one memory system message (how to use it, the
//! observations, the current task); the thread's messages not yet observed; the client's new
//! messages. A client that resends its history finds it recognised, not duplicated.

use crate::ir::tokens;
use crate::ir::Message;
use crate::store::StoredMessage;
use serde_json::Value;

/// Opening of the memory message (OM's wording, so prompts tuned for OM keep working).
pub const PREAMBLE: &str =
    "The following observations block contains your memory of past conversations with this user.";

const RULES: &str = "How to use it:
- Observations carry dates and times. When two conflict, the newer one wins.
- The user's latest message wins over anything remembered.
- Use what you remember naturally, as a person would; do not mention this memory, observations or summaries.";

/// Introduces the resource's other threads (resource scope).
const OTHERS: &str = "The user's other conversations continue meanwhile; their newest messages, not yet in the observations, by conversation:";

/// Whether a message is the client's instructions rather than conversation.
pub fn is_system(m: &Message) -> bool {
    matches!(m.role.as_str(), "system" | "developer")
}

/// The memory system message, or `None` when there is nothing to remember yet. `others` holds
/// the resource's other threads' recent messages (resource scope), already rendered.
pub fn memory_message(observations: &str, current_task: Option<&str>, others: &str) -> Option<Message> {
    if observations.trim().is_empty() && current_task.is_none() && others.is_empty() {
        return None;
    }
    let mut text = format!("{PREAMBLE}\n\n{RULES}\n\n<observations>\n{observations}\n</observations>");
    if let Some(task) = current_task {
        text.push_str(&format!("\n\n<current-task>\n{task}\n</current-task>"));
    }
    if !others.is_empty() {
        text.push_str(&format!("\n\n{OTHERS}\n<other-threads>\n{others}\n</other-threads>"));
    }
    Some(text_message("system", &text))
}

/// The text of a message's content, parts joined; other parts compared as JSON.
fn content_key(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => s.as_str().into(),
        Value::Null => "".into(),
        Value::Array(parts)
            if parts
                .iter()
                .all(|p| p.get("type").and_then(Value::as_str) == Some("text")) =>
        {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>()
                .into()
        }
        other => other.to_string().into(),
    }
}

/// Whether a client message is the same turn as a stored one (ids of tool calls included;
/// formatting of the content, string or text parts, does not matter).
fn same(client: &Message, stored: &Message) -> bool {
    let calls = |m: &Message| {
        m.tool_calls
            .iter()
            .flatten()
            .map(|c| (c.id.clone(), c.function.name.clone(), c.function.arguments.clone()))
            .collect::<Vec<_>>()
    };
    client.role == stored.role
        && client.tool_call_id == stored.tool_call_id
        && content_key(&client.content) == content_key(&stored.content)
        && calls(client) == calls(stored)
}

/// How many of the client's conversation messages the thread already holds: the longest
/// prefix of `client` equal to the end of `stored`. The last client message is always new
/// (it is the turn being asked, even when it repeats an earlier one).
pub fn already_stored(client: &[Message], stored: &[StoredMessage]) -> usize {
    let most = client.len().saturating_sub(1).min(stored.len());
    (1..=most)
        .rev()
        .find(|&k| {
            client[..k]
                .iter()
                .zip(&stored[stored.len() - k..])
                .all(|(c, s)| same(c, &s.message))
        })
        .unwrap_or(0)
}

/// The user turn put before a conversation that, once its start was observed, opens with the
/// assistant: chat templates that alternate roles, Anthropic and Gemini all want a user turn
/// first, and the model should carry on rather than greet (as Mastra's OM does).
pub const CONTINUATION: &str = "<system-reminder>This is not a message from the user. The start of this conversation is in your memory above; carry on from where it leaves off, without greeting or mentioning your memory.</system-reminder>";

/// Window trimming drops whole steps of this fraction of the budget (see [`assemble`]).
const CUT_STEPS: u64 = 4;

/// What [`assemble`] built.
#[derive(Debug)]
pub struct Assembled {
    pub messages: Vec<Message>,
    /// Stored messages left out to fit the budget (the oldest unobserved ones) and their tokens.
    pub left_out: usize,
    pub left_out_tokens: u64,
    /// The estimated tokens of `messages`.
    pub tokens: u64,
}

/// Builds the upstream messages: the client's system messages, the memory message, the
/// unobserved messages, the new ones. With a `budget` (tokens), the oldest of the conversation
/// are left out until it fits, the cut always at a user turn and never the turn being asked;
/// stored ones stay stored (observed later), new ones are stored with the answer. A
/// conversation that, after observation, opens with the assistant gets [`CONTINUATION`] first.
pub fn assemble(
    system: Vec<Message>,
    memory: Option<Message>,
    unobserved: &[StoredMessage],
    new: &[Message],
    budget: Option<u64>,
) -> Assembled {
    let conversation: Vec<&Message> = unobserved.iter().map(|m| &m.message).chain(new).collect();
    let fixed: u64 = system.iter().chain(&memory).map(tokens::message).sum();
    let sizes: Vec<u64> = conversation.iter().map(|m| tokens::message(m)).collect();
    let mut total = fixed + sizes.iter().sum::<u64>();
    let mut start = 0;
    if let Some(budget) = budget {
        // What to drop is rounded up to a step of a quarter of the budget, so the cut stays put
        // while the thread grows by a few turns: a local server reuses its cache of an unchanged
        // prompt prefix (a cut moving every turn made llama.cpp evaluate the whole prompt again).
        // Cut at the first user turn past that; failing that, at the last one (the closest to
        // fitting that still opens with the user).
        let step = (budget / CUT_STEPS).max(1);
        let drop = total.saturating_sub(budget).div_ceil(step) * step;
        let last = conversation.len().saturating_sub(1);
        let users = (1..=last).filter(|&i| conversation[i].role == "user");
        let mut cut = 0;
        let mut dropped = 0;
        for i in users {
            if dropped >= drop {
                break;
            }
            dropped += sizes[cut..i].iter().sum::<u64>();
            cut = i;
        }
        let rest = total - dropped;
        if cut > 0 {
            start = cut;
            total = rest;
        }
    }
    let mut kept = &conversation[start..];
    // Tool results whose call is already observed (a cursor left on one by an older version):
    // sent as they are, they open the context with a result no call asked for, which upstreams
    // refuse; their text goes into the user turn that opens the conversation instead.
    let orphans = kept.iter().take_while(|m| m.role == "tool").count();
    let results: Vec<String> = kept[..orphans]
        .iter()
        .map(|m| crate::ir::content_text(&m.content))
        .collect();
    total -= sizes[start..start + orphans].iter().sum::<u64>();
    kept = &kept[orphans..];
    let hint = orphans > 0 || memory.is_some() && kept.first().is_some_and(|m| m.role == "assistant");
    let mut out = Vec::with_capacity(system.len() + 2 + kept.len());
    out.extend(system);
    out.extend(memory);
    if hint {
        let mut text = CONTINUATION.to_owned();
        if orphans > 0 {
            text.push_str(&format!(
                "\n\nResults of tool calls made before:\n{}",
                results.join("\n")
            ));
        }
        let m = text_message("user", &text);
        total += tokens::message(&m);
        out.push(m);
    }
    out.extend(kept.iter().map(|m| (*m).clone()));
    let left_out = start.min(unobserved.len());
    Assembled {
        messages: out,
        left_out,
        left_out_tokens: unobserved[..left_out].iter().map(|m| m.tokens).sum(),
        tokens: total,
    }
}

/// The oldest of `batch` that fit in `budget` tokens for the observer to read, at least one;
/// a message larger than the budget is cut in the middle (marked), so it is still observed.
/// It never ends between a tool call and its results: the cursor would land on a result, and
/// a context opening with a result whose call is gone is refused upstream. A tool-call group
/// that alone is over the budget is taken whole, each message cut to its share.
pub fn fit_batch(batch: &[StoredMessage], budget: u64) -> Vec<StoredMessage> {
    let is_result = |m: &StoredMessage| m.message.role == "tool";
    let mut end = 0;
    let mut spent = 0;
    while end < batch.len() && (end == 0 || spent + batch[end].tokens <= budget) {
        spent += batch[end].tokens.min(budget);
        end += 1;
    }
    if batch.get(end).is_some_and(is_result) {
        // Back to before the call whose results are not all in.
        while end > 0 && is_result(&batch[end - 1]) {
            end -= 1;
        }
        end = end.saturating_sub(1);
    }
    let share = if end == 0 {
        end = 1 + batch.iter().skip(1).take_while(|m| is_result(m)).count();
        (budget / end as u64).max(1)
    } else {
        budget
    };
    batch[..end.min(batch.len())]
        .iter()
        .map(|m| {
            let mut m = m.clone();
            let text = crate::ir::content_text(&m.message.content);
            // A call without text is left whole (its arguments are not content to cut).
            if m.tokens > share && !text.is_empty() {
                m.message.content = Value::String(clip(&text, share));
            }
            m
        })
        .collect()
}

/// `text` cut to about `budget` tokens: its head and tail around a marker.
fn clip(text: &str, budget: u64) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut keep = chars.len();
    loop {
        let head: String = chars[..keep * 2 / 3].iter().collect();
        let tail: String = chars[chars.len() - keep / 3..].iter().collect();
        let cut = format!(
            "{head}\n[… {} characters left out …]\n{tail}",
            chars.len() - keep * 2 / 3 - keep / 3
        );
        if tokens::text(&cut) <= budget || keep == 0 {
            return cut;
        }
        keep = keep * 4 / 5;
    }
}

fn text_message(role: &str, text: &str) -> Message {
    Message {
        role: role.to_owned(),
        content: Value::String(text.to_owned()),
        tool_calls: None,
        tool_call_id: None,
        rest: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(role: &str, text: &str) -> Message {
        serde_json::from_value(json!({"role": role, "content": text})).unwrap()
    }

    fn stored(msgs: &[Message]) -> Vec<StoredMessage> {
        msgs.iter()
            .enumerate()
            .map(|(i, m)| StoredMessage {
                id: format!("m{i}"),
                seq: i as u64,
                message: m.clone(),
                tokens: 1,
                created_at: 0,
                incomplete: false,
            })
            .collect()
    }

    #[test]
    fn full_history_is_recognised() {
        let history = [
            msg("user", "hi"),
            msg("assistant", "hello"),
            msg("user", "how are you?"),
        ];
        let thread = stored(&history[..2]);
        assert_eq!(already_stored(&history, &thread), 2);
        // Text parts and a plain string are the same turn.
        let parts: Message =
            serde_json::from_value(json!({"role": "user", "content": [{"type": "text", "text": "hi"}]})).unwrap();
        assert_eq!(
            already_stored(&[parts, msg("assistant", "hello"), msg("user", "x")], &thread),
            2
        );
    }

    #[test]
    fn only_new_messages_are_new() {
        let thread = stored(&[msg("user", "hi"), msg("assistant", "hello")]);
        assert_eq!(already_stored(&[msg("user", "what now?")], &thread), 0);
        // A repeated question is asked again, not swallowed.
        let thread = stored(&[msg("user", "hi")]);
        assert_eq!(already_stored(&[msg("user", "hi")], &thread), 0);
        // A window of the latest turns matches the end of the thread.
        let thread = stored(&[
            msg("user", "a"),
            msg("assistant", "b"),
            msg("user", "c"),
            msg("assistant", "d"),
        ]);
        assert_eq!(
            already_stored(&[msg("user", "c"), msg("assistant", "d"), msg("user", "e")], &thread),
            2
        );
        assert_eq!(
            already_stored(&[msg("user", "c"), msg("assistant", "X"), msg("user", "e")], &thread),
            0
        );
    }

    #[test]
    fn assembles_in_order() {
        let mem = memory_message(
            "Date: Nov 22, 2026\n* 🔴 (14:30) Name is Alex",
            Some("Primary: chat"),
            "",
        )
        .unwrap();
        let text = mem.content.as_str().unwrap();
        assert!(text.starts_with(PREAMBLE));
        assert!(text.contains("<observations>\nDate: Nov 22, 2026"));
        assert!(text.ends_with("<current-task>\nPrimary: chat\n</current-task>"));
        let out = assemble(
            vec![msg("system", "be brief")],
            Some(mem),
            &stored(&[msg("user", "old"), msg("assistant", "reply")]),
            &[msg("user", "new")],
            None,
        )
        .messages;
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "user"]);
        assert_eq!(out[4].content, "new");
        assert!(memory_message("", None, "").is_none());
    }

    #[test]
    fn a_budget_leaves_out_the_oldest_from_a_user_turn_on() {
        let history = stored(&[
            msg("user", "one two three four five six seven eight"),
            msg("assistant", "nine ten eleven twelve"),
            msg("user", "a"),
            msg("assistant", "b"),
        ]);
        let new = [msg("user", "new")];
        let all = assemble(vec![], None, &history, &new, None);
        assert_eq!((all.messages.len(), all.left_out), (5, 0));
        // Just too small for everything: the first exchange goes, the cut lands on a user turn.
        let cut = assemble(vec![], None, &history, &new, Some(all.tokens - 1));
        assert_eq!((cut.left_out, cut.messages[0].content.as_str()), (2, Some("a")));
        assert!(cut.tokens < all.tokens);
        // Nothing fits: only the turn being asked is left.
        let last = assemble(vec![], None, &history, &new, Some(1));
        assert_eq!((last.messages.len(), last.left_out), (1, 4));
    }

    #[test]
    fn a_conversation_opening_with_the_assistant_gets_a_user_turn_first() {
        let mem = memory_message("* 🔴 (14:30) Name is Alex", None, "");
        let tail = stored(&[msg("assistant", "OK.")]);
        let out = assemble(vec![], mem, &tail, &[msg("user", "new")], None).messages;
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(out[1].content, CONTINUATION);
    }

    #[test]
    fn a_message_over_the_budget_is_cut_in_the_middle() {
        let text = format!("{} MIDDLE {}", "head ".repeat(300), "tail ".repeat(300));
        let mut big = stored(&[msg("user", &text), msg("assistant", "ok")]);
        big[0].tokens = tokens::text(&text);
        let fitted = fit_batch(&big, 100);
        assert_eq!(fitted.len(), 1);
        let shown = fitted[0].message.content.as_str().unwrap();
        assert!(tokens::text(shown) <= 100 && !shown.contains("MIDDLE"), "{shown}");
        assert!(shown.starts_with("head") && shown.ends_with("tail ") && shown.contains("characters left out"));
    }

    fn tool_call(id: &str) -> Message {
        serde_json::from_value(json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}]}))
        .unwrap()
    }

    fn tool_result(id: &str) -> Message {
        serde_json::from_value(json!({"role": "tool", "tool_call_id": id, "content": "r"})).unwrap()
    }

    fn sized(msgs: &[(Message, u64)]) -> Vec<StoredMessage> {
        let mut out = stored(&msgs.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>());
        for (m, (_, t)) in out.iter_mut().zip(msgs) {
            m.tokens = *t;
        }
        out
    }

    fn roles(out: &[Message]) -> Vec<&str> {
        out.iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn a_batch_never_ends_between_a_tool_call_and_its_results() {
        let batch = sized(&[
            (msg("user", "q"), 40),
            (tool_call("c1"), 40),
            (tool_result("c1"), 40),
            (msg("user", "q2"), 10),
        ]);
        // The call fits, its result does not: the batch ends before the call.
        let fitted = fit_batch(&batch, 100);
        assert_eq!(fitted.len(), 1);
        let mem = memory_message("* 🔴 (14:30) x", None, "");
        let out = assemble(vec![], mem, &batch[fitted.len()..], &[], None).messages;
        assert_eq!(roles(&out), ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(out[1].content, CONTINUATION);
        // Two results, only the first fits: the same.
        let batch = sized(&[
            (msg("user", "q"), 40),
            (tool_call("c1"), 20),
            (tool_result("c1"), 20),
            (tool_result("c1"), 40),
        ]);
        assert_eq!(fit_batch(&batch, 100).len(), 1);
        // A group that alone is over the budget is observed whole, each message cut to its share.
        let batch = sized(&[(tool_call("c1"), 80), (tool_result("c1"), 80), (msg("user", "q"), 10)]);
        let fitted = fit_batch(&batch, 100);
        assert_eq!(
            roles(&fitted.iter().map(|m| m.message.clone()).collect::<Vec<_>>()),
            ["assistant", "tool"]
        );
    }

    #[test]
    fn a_context_never_opens_with_a_tool_result() {
        // A cursor left on a tool result (observed by an older version): the orphan result is
        // folded into the user turn that opens the conversation.
        let mem = memory_message("* 🔴 (14:30) x", None, "");
        let tail = stored(&[tool_result("c1"), msg("assistant", "It is sunny.")]);
        let out = assemble(vec![], mem, &tail, &[msg("user", "new")], None).messages;
        assert_eq!(roles(&out), ["system", "user", "assistant", "user"]);
        let opening = out[1].content.as_str().unwrap();
        assert!(opening.starts_with(CONTINUATION) && opening.ends_with("r"), "{opening}");
        let mem = memory_message("* 🔴 (14:30) x", None, "");
        let tail = stored(&[tool_result("c1"), msg("user", "thanks")]);
        let out = assemble(vec![], mem, &tail, &[], None).messages;
        assert_eq!(roles(&out), ["system", "user", "user"]);
    }

    #[test]
    fn the_cut_stays_put_while_the_thread_grows_a_little() {
        // 10-token messages, a 500-token budget cut in steps of 125 tokens: over ten more turns
        // (200 tokens) the first kept message moves twice at most (every turn without steps).
        let turns: Vec<Message> = (0..100)
            .map(|i| msg(if i % 2 == 0 { "user" } else { "assistant" }, &"word ".repeat(6)))
            .collect();
        let cuts: Vec<usize> = (60..=80)
            .step_by(2)
            .map(|n| {
                let built = assemble(vec![], None, &stored(&turns[..n]), &[msg("user", "new")], Some(500));
                assert!(built.tokens <= 500, "{} tokens", built.tokens);
                built.left_out
            })
            .collect();
        let moves = cuts.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(moves <= 2, "{cuts:?}");
        assert!(cuts.iter().all(|c| c % 2 == 0), "cut at a user turn: {cuts:?}");
    }
}
