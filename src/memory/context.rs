//! Context assembly: what goes upstream for a request with memory on.
//!
//! Order: the client's own system messages; one memory system message (how to use it, the
//! observations, the current task); the thread's messages not yet observed; the client's new
//! messages. A client that resends its history finds it recognised, not duplicated.

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

/// Whether a message is the client's instructions rather than conversation.
pub fn is_system(m: &Message) -> bool {
    matches!(m.role.as_str(), "system" | "developer")
}

/// The memory system message, or `None` when nothing has been observed yet.
pub fn memory_message(observations: &str, current_task: Option<&str>) -> Option<Message> {
    if observations.trim().is_empty() && current_task.is_none() {
        return None;
    }
    let mut text = format!("{PREAMBLE}\n\n{RULES}\n\n<observations>\n{observations}\n</observations>");
    if let Some(task) = current_task {
        text.push_str(&format!("\n\n<current-task>\n{task}\n</current-task>"));
    }
    Some(Message {
        role: "system".to_owned(),
        content: Value::String(text),
        tool_calls: None,
        tool_call_id: None,
        rest: Default::default(),
    })
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

/// Builds the upstream messages.
pub fn assemble(
    system: Vec<Message>,
    memory: Option<Message>,
    unobserved: &[StoredMessage],
    new: &[Message],
) -> Vec<Message> {
    let mut out = Vec::with_capacity(system.len() + 1 + unobserved.len() + new.len());
    out.extend(system);
    out.extend(memory);
    out.extend(unobserved.iter().map(|m| m.message.clone()));
    out.extend(new.iter().cloned());
    out
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
        let mem = memory_message("Date: Nov 22, 2026\n* 🔴 (14:30) Name is Alex", Some("Primary: chat")).unwrap();
        let text = mem.content.as_str().unwrap();
        assert!(text.starts_with(PREAMBLE));
        assert!(text.contains("<observations>\nDate: Nov 22, 2026"));
        assert!(text.ends_with("<current-task>\nPrimary: chat\n</current-task>"));
        let out = assemble(
            vec![msg("system", "be brief")],
            Some(mem),
            &stored(&[msg("user", "old"), msg("assistant", "reply")]),
            &[msg("user", "new")],
        );
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "system", "user", "assistant", "user"]);
        assert_eq!(out[4].content, "new");
        assert!(memory_message("", None).is_none());
    }
}
