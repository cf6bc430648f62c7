//! Conversions between the Responses API's items and the chat IR.
//!
//! Memory reads and writes conversations in one shape, the chat IR, while a `/v1/responses`
//! request speaks items (messages, function calls and their outputs, reasoning…). These
//! functions carry over what the IR can express and skip the rest, so memory sees the same
//! conversation whichever endpoint the client used.

use crate::error::ApiError;
use crate::ir::{Message, ToolCall};
use serde_json::{json, Map, Value};

/// The roles a Responses message item may carry; anything else would make the IR lie about who
/// spoke, so it is refused rather than passed on.
const ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];

/// Reads a request's `input` into chat messages.
///
/// Errors name the offending item, because the upstream would reject the same input less
/// clearly, and memory must not store a conversation it misread.
pub(crate) fn input_to_messages(input: &Value) -> Result<Vec<Message>, ApiError> {
    let items = match input {
        Value::String(text) => return Ok(vec![Message::new("user", Value::String(text.clone()))]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::invalid_param(
                "input",
                "input must be a string or an array of input items",
            ))
        }
    };
    let mut messages: Vec<Message> = Vec::with_capacity(items.len());
    // Whether the last message was built from function_call items: parallel calls arrive as
    // consecutive items but are one assistant turn in the chat shape.
    let mut calling = false;
    for (i, item) in items.iter().enumerate() {
        let bad = |what: &str| ApiError::invalid_param("input", format!("input[{i}] {what}"));
        if !item.is_object() {
            return Err(bad("is not an object; each input item must be a JSON object"));
        }
        // An item without `type` is the "easy" message form: `{"role": …, "content": …}`.
        let kind = match item.get("type") {
            None => "message",
            Some(Value::String(kind)) => kind.as_str(),
            Some(_) => return Err(bad("has a `type` that is not a string")),
        };
        match kind {
            "message" => {
                messages.push(input_message(item).map_err(|e| bad(&e))?);
                calling = false;
            }
            "function_call" => {
                let call =
                    function_call(item).ok_or_else(|| bad("is a function_call without string call_id and name"))?;
                match messages.last_mut() {
                    Some(last) if calling => last.tool_calls.get_or_insert_with(Vec::new).push(call),
                    _ => messages
                        .push(assistant(None, vec![call]).unwrap_or_else(|| Message::new("assistant", Value::Null))),
                }
                calling = true;
            }
            "function_call_output" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("is a function_call_output without a string call_id"))?;
                let mut tool = Message::new("tool", Value::String(tool_output(item.get("output"))));
                tool.tool_call_id = Some(call_id.to_owned());
                messages.push(tool);
                calling = false;
            }
            // Reasoning, built-in tool calls, item references…: the chat shape has no place for
            // them. Skipping one leaves `calling` as it was, since the IR never sees it.
            _ => {}
        }
    }
    Ok(messages)
}

/// Writes chat messages as Responses input items, to send a stored or assembled conversation
/// to an upstream that speaks the Responses API.
pub(crate) fn messages_to_input(messages: &[Message]) -> Vec<Value> {
    let mut items = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role.as_str() {
            "assistant" => {
                let calls = m.tool_calls.as_deref().unwrap_or_default();
                // Assistant content goes as a string: the API refuses input_text parts from the
                // assistant, and a tool-calling turn usually has no text at all.
                let text = text_of(&m.content);
                if !text.is_empty() || calls.is_empty() {
                    items.push(json!({"role": "assistant", "content": text}));
                }
                items.extend(calls.iter().map(|c| {
                    json!({
                        "type": "function_call",
                        "call_id": c.id,
                        "name": c.function.name,
                        "arguments": c.function.arguments,
                    })
                }));
            }
            "tool" => items.push(json!({
                "type": "function_call_output",
                "call_id": m.tool_call_id.as_deref().unwrap_or_default(),
                "output": text_of(&m.content),
            })),
            role => items.push(json!({"role": role, "content": input_content(&m.content)})),
        }
    }
    items
}

/// The assistant turn a finished Responses `response` object holds: its text and function
/// calls, which is what memory keeps of an answer. `None` when it holds neither.
pub(crate) fn output_to_message(response: &Value) -> Option<Message> {
    let mut text: Option<String> = None;
    let mut calls = Vec::new();
    for item in response.get("output").and_then(Value::as_array).into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if part.get("type").and_then(Value::as_str) == Some("output_text") {
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            text.get_or_insert_with(String::new).push_str(t);
                        }
                    }
                }
            }
            Some("function_call") => calls.extend(function_call(item)),
            _ => {}
        }
    }
    assistant(text, calls)
}

/// Rebuilds the assistant turn from a Responses event stream as it passes through, so that a
/// stream cut short still leaves memory with what the client actually received.
#[derive(Debug, Default)]
pub(crate) struct OutputAccumulator {
    text: Option<String>,
    calls: Vec<PendingCall>,
    /// The message of a terminal event's `response`: complete by definition, so it wins.
    last: Option<Message>,
}

/// A function call being streamed: argument deltas name their item by id and output index.
#[derive(Debug)]
struct PendingCall {
    item_id: Option<String>,
    output_index: Option<u64>,
    call: ToolCall,
}

impl OutputAccumulator {
    /// Takes one event; `kind` is its type (the SSE `event:` or the data's `type`).
    pub fn event(&mut self, kind: &str, data: &Value) {
        let str_field = |k: &str| data.get(k).and_then(Value::as_str);
        let output_index = data.get("output_index").and_then(Value::as_u64);
        match kind {
            "response.output_text.delta" => {
                if let Some(delta) = str_field("delta") {
                    self.text.get_or_insert_with(String::new).push_str(delta);
                }
            }
            // `added` announces a call with its name and empty arguments; `done` has it whole.
            "response.output_item.added" | "response.output_item.done" => {
                let Some(item) = data.get("item") else { return };
                let Some(call) = function_call(item) else { return };
                let item_id = item.get("id").and_then(Value::as_str);
                match self.find(item_id, output_index) {
                    Some(pending) => pending.call = call,
                    None => self.calls.push(PendingCall {
                        item_id: item_id.map(str::to_owned),
                        output_index,
                        call,
                    }),
                }
            }
            "response.function_call_arguments.delta" => {
                if let (Some(delta), Some(pending)) =
                    (str_field("delta"), self.find(str_field("item_id"), output_index))
                {
                    pending.call.function.arguments.push_str(delta);
                }
            }
            "response.function_call_arguments.done" => {
                if let (Some(args), Some(pending)) =
                    (str_field("arguments"), self.find(str_field("item_id"), output_index))
                {
                    args.clone_into(&mut pending.call.function.arguments);
                }
            }
            "response.completed" | "response.incomplete" => {
                self.last = data.get("response").and_then(output_to_message);
            }
            _ => {}
        }
    }

    /// The assistant turn so far; `None` if no text or function call arrived.
    pub fn message(&self) -> Option<Message> {
        self.last.clone().or_else(|| {
            let calls = self.calls.iter().map(|p| p.call.clone()).collect();
            assistant(self.text.clone(), calls)
        })
    }

    fn find(&mut self, item_id: Option<&str>, output_index: Option<u64>) -> Option<&mut PendingCall> {
        self.calls.iter_mut().find(|p| match (item_id, p.item_id.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => output_index.is_some() && p.output_index == output_index,
        })
    }
}

/// An assistant turn from its text and calls. Content is `null` rather than `""` when only
/// tools were called, as chat servers expect.
fn assistant(text: Option<String>, calls: Vec<ToolCall>) -> Option<Message> {
    let text = text.filter(|t| !t.is_empty() || calls.is_empty());
    if text.is_none() && calls.is_empty() {
        return None;
    }
    let mut m = Message::new("assistant", text.map_or(Value::Null, Value::String));
    m.tool_calls = (!calls.is_empty()).then_some(calls);
    Some(m)
}

/// A `function_call` item as a tool call; the item's `call_id` (not its `id`) is what the
/// matching `function_call_output` names, so it becomes the tool call's id.
fn function_call(item: &Value) -> Option<ToolCall> {
    let field = |k: &str| item.get(k).and_then(Value::as_str);
    Some(ToolCall::function(
        field("call_id")?.to_owned(),
        field("name")?.to_owned(),
        field("arguments").unwrap_or_default().to_owned(),
    ))
}

fn input_message(item: &Value) -> Result<Message, String> {
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .ok_or("is a message without a string role")?;
    if !ROLES.contains(&role) {
        return Err(format!(
            "has role {role:?}; a message's role must be user, assistant, system or developer"
        ));
    }
    let content = match item.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) => chat_content(parts),
        _ => return Err("is a message whose content is neither a string nor an array of parts".to_owned()),
    };
    Ok(Message::new(role, content))
}

/// Content parts in the chat shape; all-text content becomes one string, which is what memory
/// reads best. The parts are joined by newlines because they were written as separate blocks.
fn chat_content(parts: &[Value]) -> Value {
    let parts: Vec<Value> = parts.iter().map(chat_part).collect();
    match parts.iter().map(chat_text).collect::<Option<Vec<&str>>>() {
        Some(texts) => Value::String(texts.join("\n")),
        None => Value::Array(parts),
    }
}

/// One Responses content part as a chat part; a part chat has no equivalent for (a file, an
/// image by file id, a refusal) is kept as it came.
fn chat_part(part: &Value) -> Value {
    let field = |k: &str| part.get(k).and_then(Value::as_str);
    match (field("type"), field("text"), field("image_url")) {
        (Some("input_text" | "output_text"), Some(text), _) => json!({"type": "text", "text": text}),
        (Some("input_image"), _, Some(url)) => {
            let mut image = Map::new();
            image.insert("url".to_owned(), Value::String(url.to_owned()));
            if let Some(detail) = part.get("detail") {
                image.insert("detail".to_owned(), detail.clone());
            }
            json!({"type": "image_url", "image_url": image})
        }
        _ => part.clone(),
    }
}

/// The text of a chat text part.
fn chat_text(part: &Value) -> Option<&str> {
    match part.get("type").and_then(Value::as_str) {
        Some("text") => part.get("text").and_then(Value::as_str),
        _ => None,
    }
}

/// A function_call_output's `output` as tool content. Chat tool results are strings, so
/// structured output becomes its JSON text rather than being dropped.
fn tool_output(output: Option<&Value>) -> String {
    match output {
        None => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => match chat_content(parts) {
            Value::String(text) => text,
            _ => Value::Array(parts.clone()).to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Chat content for a field that only takes a string: text as is, all-text parts joined, and
/// anything else as its JSON text so that nothing is lost.
fn text_of(content: &Value) -> String {
    match content {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(parts) => match parts.iter().map(chat_text).collect::<Option<Vec<&str>>>() {
            Some(texts) => texts.join("\n"),
            None => content.to_string(),
        },
        other => other.to_string(),
    }
}

/// Chat content for a user, system or developer input message: parts become input parts.
fn input_content(content: &Value) -> Value {
    match content {
        Value::Array(parts) => Value::Array(parts.iter().map(input_part).collect()),
        other => Value::String(text_of(other)),
    }
}

fn input_part(part: &Value) -> Value {
    let url = part.get("image_url").and_then(|i| i.get("url")).and_then(Value::as_str);
    match (part.get("type").and_then(Value::as_str), chat_text(part), url) {
        (Some("text"), Some(text), _) => json!({"type": "input_text", "text": text}),
        (Some("image_url"), _, Some(url)) => {
            let mut image = Map::new();
            image.insert("type".to_owned(), Value::String("input_image".to_owned()));
            image.insert("image_url".to_owned(), Value::String(url.to_owned()));
            if let Some(detail) = part.get("image_url").and_then(|i| i.get("detail")) {
                image.insert("detail".to_owned(), detail.clone());
            }
            Value::Object(image)
        }
        _ => part.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn call(id: &str, name: &str, args: &str) -> ToolCall {
        ToolCall::function(id.to_owned(), name.to_owned(), args.to_owned())
    }

    #[test]
    fn string_input_is_one_user_message() {
        let m = input_to_messages(&json!("Tell me a three sentence bedtime story about a unicorn.")).unwrap();
        assert_eq!(
            m,
            vec![Message::new(
                "user",
                json!("Tell me a three sentence bedtime story about a unicorn.")
            )]
        );
    }

    #[test]
    fn tool_conversation_converts_and_round_trips() {
        let input = parse(
            r#"[
            {"role": "developer", "content": "Talk like a pirate."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What's the weather in Paris and Bogotá?"}]},
            {"type": "reasoning", "id": "rs_6820f383d7c08191846711c5df8233bc", "summary": []},
            {"type": "function_call", "id": "fc_12345xyz", "call_id": "call_12345xyz", "name": "get_weather",
             "arguments": "{\"location\":\"Paris, France\"}", "status": "completed"},
            {"type": "function_call", "id": "fc_67890abc", "call_id": "call_67890abc", "name": "get_weather",
             "arguments": "{\"location\":\"Bogotá, Colombia\"}", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_12345xyz", "output": "{\"temperature\": 14}"},
            {"type": "function_call_output", "call_id": "call_67890abc", "output": {"temperature": 19}},
            {"id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c5e9a2b6", "type": "message", "status": "completed",
             "role": "assistant", "content": [{"type": "output_text", "text": "Arr, 14 and 19 degrees.", "annotations": []}]}
        ]"#,
        );
        let messages = input_to_messages(&input).unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["developer", "user", "assistant", "tool", "tool", "assistant"]);
        assert_eq!(messages[1].content, json!("What's the weather in Paris and Bogotá?"));
        assert_eq!(messages[2].content, Value::Null);
        assert_eq!(
            messages[2].tool_calls,
            Some(vec![
                call("call_12345xyz", "get_weather", r#"{"location":"Paris, France"}"#),
                call("call_67890abc", "get_weather", r#"{"location":"Bogotá, Colombia"}"#),
            ])
        );
        assert_eq!(messages[3].tool_call_id.as_deref(), Some("call_12345xyz"));
        assert_eq!(messages[4].content, json!(r#"{"temperature":19}"#));
        assert_eq!(messages[5].content, json!("Arr, 14 and 19 degrees."));

        let items = messages_to_input(&messages);
        assert_eq!(items[2]["type"], "function_call");
        assert_eq!(items[2]["call_id"], "call_12345xyz");
        assert_eq!(
            items[4],
            json!({"type": "function_call_output", "call_id": "call_12345xyz", "output": "{\"temperature\": 14}"})
        );
        assert_eq!(input_to_messages(&Value::Array(items)).unwrap(), messages);
    }

    #[test]
    fn image_part_converts_both_ways() {
        let input = parse(
            r#"[{"role": "user", "content": [
            {"type": "input_text", "text": "what is in this image?"},
            {"type": "input_image", "image_url": "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg", "detail": "low"},
            {"type": "input_file", "file_id": "file-6F2ksmvXxt4VdoqmHRw6kL"}
        ]}]"#,
        );
        let messages = input_to_messages(&input).unwrap();
        let parts = messages[0].content.as_array().unwrap();
        assert_eq!(parts[0], json!({"type": "text", "text": "what is in this image?"}));
        assert_eq!(parts[1]["type"], "image_url");
        assert_eq!(parts[1]["image_url"]["detail"], "low");
        assert!(parts[1]["image_url"]["url"]
            .as_str()
            .unwrap()
            .ends_with("boardwalk.jpg"));
        assert_eq!(parts[2], input[0]["content"][2]);
        assert_eq!(messages_to_input(&messages), input.as_array().unwrap().clone());
    }

    #[test]
    fn assistant_text_and_calls_become_separate_items() {
        let mut m = Message::new("assistant", json!([{"type": "text", "text": "Checking."}]));
        m.tool_calls = Some(vec![call("call_1", "f", "{}")]);
        let mut tool = Message::new("tool", json!("ok"));
        tool.tool_call_id = Some("call_1".to_owned());
        let items = messages_to_input(&[m, tool]);
        assert_eq!(
            Value::Array(items),
            json!([
                {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
            ])
        );
    }

    #[test]
    fn invalid_input_names_the_item() {
        for (input, needle) in [
            (json!(42), "string or an array"),
            (json!({"role": "user", "content": "hi"}), "string or an array"),
            (json!(["hi"]), "input[0] is not an object"),
            (
                json!([{"type": "message", "content": "hi"}]),
                "input[0] is a message without",
            ),
            (
                json!([{"role": "user", "content": "hi"}, {"content": "x"}]),
                "input[1] is a message without",
            ),
            (json!([{"role": "tool", "content": "x"}]), "has role \"tool\""),
            (json!([{"role": "user", "content": 3}]), "neither a string nor an array"),
            (json!([{"type": 1}]), "not a string"),
            (
                json!([{"type": "function_call", "name": "f", "arguments": "{}"}]),
                "call_id and name",
            ),
            (json!([{"type": "function_call_output", "output": "x"}]), "call_id"),
        ] {
            let e = input_to_messages(&input).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
            assert!(e.message.contains(needle), "{input}: {}", e.message);
        }
    }

    const TEXT_RESPONSE: &str = r#"{
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b", "object": "response",
        "created_at": 1741476542, "status": "completed", "model": "gpt-4.1-2025-04-14",
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b", "status": "completed",
             "role": "assistant", "content": [{"type": "output_text",
             "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.",
             "annotations": []}]}
        ],
        "usage": {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123}
    }"#;

    #[test]
    fn output_text_becomes_assistant_content() {
        let m = output_to_message(&parse(TEXT_RESPONSE)).unwrap();
        assert_eq!(m.role, "assistant");
        assert_eq!(
            m.content,
            json!("In a peaceful grove beneath a silver moon, a unicorn named Lumina discovered a hidden pool.")
        );
        assert_eq!(m.tool_calls, None);
    }

    #[test]
    fn output_function_calls_become_tool_calls() {
        let response = parse(
            r#"{"id": "resp_abc", "object": "response", "status": "completed", "output": [
            {"type": "function_call", "id": "fc_12345xyz", "call_id": "call_12345xyz", "name": "get_weather",
             "arguments": "{\"location\":\"Paris, France\"}", "status": "completed"}
        ]}"#,
        );
        let m = output_to_message(&response).unwrap();
        assert_eq!(m.content, Value::Null);
        assert_eq!(
            m.tool_calls,
            Some(vec![call(
                "call_12345xyz",
                "get_weather",
                r#"{"location":"Paris, France"}"#
            )])
        );
        assert_eq!(output_to_message(&json!({"output": []})), None);
        assert_eq!(
            output_to_message(&json!({"output": [{"type": "reasoning", "summary": []}]})),
            None
        );
        assert_eq!(output_to_message(&json!("nonsense")), None);
    }

    fn feed(events: &[Value]) -> OutputAccumulator {
        let mut acc = OutputAccumulator::default();
        for ev in events {
            acc.event(ev["type"].as_str().unwrap(), ev);
        }
        acc
    }

    fn text_events() -> Vec<Value> {
        let item =
            json!({"id": "msg_123", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
        let delta = |d: &str, n: u64| {
            json!({"type": "response.output_text.delta", "item_id": "msg_123", "output_index": 0,
                   "content_index": 0, "delta": d, "sequence_number": n})
        };
        vec![
            json!({"type": "response.created", "sequence_number": 0,
                   "response": {"id": "resp_123", "object": "response", "status": "in_progress", "output": []}}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": item, "sequence_number": 1}),
            json!({"type": "response.content_part.added", "item_id": "msg_123", "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}, "sequence_number": 2}),
            delta("Hi", 3),
            delta(" there!", 4),
        ]
    }

    #[test]
    fn accumulator_prefers_the_completed_response() {
        let done_item = json!({"id": "msg_123", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi there!", "annotations": []}]});
        let mut events = text_events();
        events.extend([
            json!({"type": "response.output_text.done", "item_id": "msg_123", "output_index": 0, "content_index": 0,
                   "text": "Hi there!", "sequence_number": 5}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": done_item, "sequence_number": 6}),
            json!({"type": "response.completed", "sequence_number": 7, "response": {"id": "resp_123",
                   "object": "response", "status": "completed", "output": [done_item],
                   "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}}),
        ]);
        let expected = Message::new("assistant", json!("Hi there!"));
        assert_eq!(feed(&events).message(), Some(expected.clone()));
        // The completed event alone is enough: its response is authoritative.
        assert_eq!(feed(&events[events.len() - 1..]).message(), Some(expected));
    }

    #[test]
    fn accumulator_keeps_a_truncated_stream() {
        assert_eq!(
            feed(&text_events()).message(),
            Some(Message::new("assistant", json!("Hi there!")))
        );
        assert_eq!(feed(&text_events()[..3]).message(), None);
        assert_eq!(OutputAccumulator::default().message(), None);
    }

    #[test]
    fn accumulator_assembles_function_call_arguments() {
        let added = json!({"type": "response.output_item.added", "output_index": 0, "sequence_number": 1,
            "item": {"type": "function_call", "id": "fc_1234", "call_id": "call_1234", "name": "get_weather",
                     "arguments": "", "status": "in_progress"}});
        let delta = |d: &str| {
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1234", "output_index": 0,
                   "delta": d, "sequence_number": 2})
        };
        let events = [added, delta("{\"location\":"), delta("\"Paris\"}")];
        let m = feed(&events).message().unwrap();
        assert_eq!(m.content, Value::Null);
        assert_eq!(
            m.tool_calls,
            Some(vec![call("call_1234", "get_weather", r#"{"location":"Paris"}"#)])
        );

        // A cut-short stream keeps the partial arguments as they arrived.
        let m = feed(&events[..2]).message().unwrap();
        assert_eq!(m.tool_calls.unwrap()[0].function.arguments, "{\"location\":");

        let mut all = events.to_vec();
        all.push(
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1234", "output_index": 0,
                        "arguments": "{\"location\":\"Paris, France\"}", "sequence_number": 4}),
        );
        let m = feed(&all).message().unwrap();
        assert_eq!(
            m.tool_calls.unwrap()[0].function.arguments,
            r#"{"location":"Paris, France"}"#
        );
    }

    #[test]
    fn accumulator_ignores_malformed_events() {
        let mut acc = OutputAccumulator::default();
        for data in [
            json!(null),
            json!(1),
            json!({"delta": 5}),
            json!({"item": "x"}),
            json!({"response": []}),
        ] {
            for kind in [
                "response.output_text.delta",
                "response.output_item.added",
                "response.output_item.done",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.completed",
            ] {
                acc.event(kind, &data);
            }
        }
        assert_eq!(acc.message(), None);
    }
}
