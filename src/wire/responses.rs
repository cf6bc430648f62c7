//! OpenAI's Responses API format: a request read into a chat request, and a chat answer written
//! back as a `response` object, for a provider that only chats; [`items`] carries a
//! conversation's items to and from the IR.

pub(crate) mod items;

use crate::error::ApiError;
use crate::ir::{random_id, ChatRequest, ChatResponse, Message, PassthroughRequest, Rest, Usage};
use serde_json::{json, Value};

/// Request fields with no meaning once translated to chat; dropped.
const RESPONSES_ONLY: [&str; 12] = [
    "include",
    "store",
    "truncation",
    "background",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "max_tool_calls",
    "prompt",
    "previous_response_id",
    "conversation",
];
/// The chat request a Responses request asks for.
pub(crate) fn to_chat(req: PassthroughRequest) -> Result<ChatRequest, ApiError> {
    let mut rest = Rest::new();
    let mut messages = Vec::new();
    if let Some(Value::String(i)) = req.rest.get("instructions") {
        messages.push(Message::new("system", Value::String(i.clone())));
    }
    messages.extend(items::input_to_messages(req.rest.get("input").unwrap_or(&Value::Null))?);
    for (k, v) in req.rest {
        match k.as_str() {
            "input" | "instructions" => {}
            "previous_response_id" | "conversation" if !v.is_null() => {
                return Err(ApiError::invalid_param(
                    &k,
                    format!(
                        "{k} needs a provider that stores responses (OpenAI); this model's provider only chats. Send \
                         the whole conversation as input, or let memgate remember it with x-thread-id and \
                         x-resource-id headers"
                    ),
                ))
            }
            "max_output_tokens" => {
                rest.insert("max_completion_tokens".to_owned(), v);
            }
            "tools" => {
                rest.insert(k, tools(&v)?);
            }
            "tool_choice" => {
                rest.insert(k, tool_choice(v));
            }
            "text" => {
                if let Some(f) = v.get("format").and_then(response_format) {
                    rest.insert("response_format".to_owned(), f);
                }
            }
            "reasoning" => {
                if let Some(e) = v.get("effort").filter(|e| e.is_string()) {
                    rest.insert("reasoning_effort".to_owned(), e.clone());
                }
            }
            _ if RESPONSES_ONLY.contains(&k.as_str()) => {}
            _ => {
                rest.insert(k, v);
            }
        }
    }
    let stream = req.stream;
    if stream == Some(true) {
        // response.completed carries usage, so the chunks must bring it.
        rest.insert("stream_options".to_owned(), json!({"include_usage": true}));
    }
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream,
        rest,
    })
}

/// Responses function tools (`{type, name, parameters}`) as chat tools.
fn tools(v: &Value) -> Result<Value, ApiError> {
    let list = ApiError::tools_list(v)?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut f = t.as_object().cloned().unwrap_or_default();
                f.remove("type");
                out.push(json!({"type": "function", "function": f}));
            }
            other => {
                return Err(ApiError::invalid_param(
                    &format!("tools[{i}].type"),
                    format!(
                        "tool type {} is built into OpenAI's Responses API; this model's provider only takes \
                         function tools",
                        other.map_or("(none)".to_owned(), |o| format!("{o:?}"))
                    ),
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

fn tool_choice(v: Value) -> Value {
    match v.get("name").and_then(Value::as_str) {
        Some(name) => json!({"type": "function", "function": {"name": name}}),
        None => v,
    }
}

/// `text.format` as chat's `response_format`.
fn response_format(f: &Value) -> Option<Value> {
    match f.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let mut schema = f.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

/// Chat usage in the Responses naming.
fn usage(u: &Usage) -> Value {
    let detail = |k: &str, d: &str| {
        u.rest
            .get(k)
            .and_then(|x| x.get(d))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")},
        "total_tokens": u.total_tokens,
    })
}

/// A `response` object. `status` is in_progress, completed or incomplete.
pub(crate) fn response(
    id: &str,
    created: u64,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage_: Option<&Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "usage": usage_.map(usage),
    })
}

pub(crate) fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": if status == "in_progress" { json!([]) } else { json!([text_part(text)]) }})
}

pub(crate) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

pub(crate) fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// A whole chat answer as a `response` object.
pub(crate) fn from_chat(answer: &ChatResponse) -> Value {
    let choice = answer.choices.first();
    let mut output = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        let text = crate::ir::content_text(&m.content);
        if !text.is_empty() || m.tool_calls.is_none() {
            output.push(message_item(&random_id("msg_"), "completed", &text));
        }
        for c in m.tool_calls.iter().flatten() {
            output.push(call_item(
                &random_id("fc_"),
                "completed",
                &c.id,
                &c.function.name,
                &c.function.arguments,
            ));
        }
    }
    let status = match choice.and_then(|c| c.finish_reason.as_deref()) {
        Some("length") => "incomplete",
        _ => "completed",
    };
    let created = answer.rest.get("created").and_then(Value::as_u64).unwrap_or(0);
    response(
        &random_id("resp_"),
        created,
        &answer.model,
        status,
        output,
        answer.usage.as_ref(),
    )
}
