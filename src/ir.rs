//! The canonical request and response types every layer speaks.
//!
//! Inbound formats parse into these, provider adapters translate out of them, and memory reads
//! them. Each struct names only the fields memgate acts on and flattens everything else into
//! `rest`, so a field a provider adds tomorrow flows through untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod tokens;

/// JSON object fields memgate does not interpret, kept in arrival order.
pub type Rest = Map<String, Value>;

/// A chat request (OpenAI chat-completions shape, the lingua franca of the gateway).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    /// `provider/model` as the client wrote it, rewritten to the upstream name by the router.
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

impl ChatRequest {
    /// Whether the client asked for server-sent events.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }
}

/// One message of a conversation, in any role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// A string or an array of content parts; `null` for an assistant turn that only calls
    /// tools. Always written out, because several servers reject an assistant message without it.
    #[serde(default)]
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// A function call the assistant asked for; `id` is how the tool result finds it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
    #[serde(flatten)]
    pub rest: Rest,
}

fn function_type() -> String {
    "function".to_owned()
}

/// The name and JSON-encoded arguments of a tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// Kept as the model produced it, even when it is not valid JSON: the client decides.
    #[serde(default)]
    pub arguments: String,
}

/// A complete (non-streamed) chat answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatResponse {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One alternative of a complete answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One `chat.completion.chunk` of a streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// One alternative's increment within a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Value,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// Token accounting as OpenAI reports it; details (`prompt_tokens_details.cached_tokens`,
/// `completion_tokens_details.reasoning_tokens`…) ride in `rest`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub rest: Rest,
}

impl Usage {
    /// Reads either naming: chat's `prompt_/completion_tokens` or Responses' `input_/output_tokens`.
    pub fn from_value(v: &Value) -> Option<Usage> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let prompt = n("prompt_tokens").or_else(|| n("input_tokens"))?;
        let completion = n("completion_tokens").or_else(|| n("output_tokens")).unwrap_or(0);
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: n("total_tokens").unwrap_or(prompt.saturating_add(completion)),
            rest: Rest::new(),
        })
    }

    /// Usage from a vendor's counts: `cached` prompt tokens (already included in `prompt`) and
    /// `reasoning` tokens (already included in `completion`) become OpenAI's detail fields.
    pub fn counted(prompt: u64, completion: u64, cached: Option<u64>, reasoning: Option<u64>) -> Usage {
        let mut rest = Rest::new();
        if let Some(c) = cached {
            rest.insert(
                "prompt_tokens_details".to_owned(),
                serde_json::json!({"cached_tokens": c}),
            );
        }
        if let Some(r) = reasoning {
            rest.insert(
                "completion_tokens_details".to_owned(),
                serde_json::json!({"reasoning_tokens": r}),
            );
        }
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            rest,
        }
    }
}

/// A unique id with a vendor-style prefix (`call_`, `resp_`, `msg_`…) for things memgate names
/// itself: a Gemini function call, a translated Responses item. 24 random hex digits.
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: a process-wide counter is still unique within the process.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        b[..8].copy_from_slice(&NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    }
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    for x in b {
        out.push_str(&format!("{x:02x}"));
    }
    out
}

/// The `id`, `object` and `created` fields of an answer memgate writes itself (translated from
/// another vendor's format), in OpenAI's order.
pub fn envelope(id: &str, object: &str, created: u64) -> Rest {
    let mut rest = Rest::new();
    rest.insert("id".to_owned(), Value::String(id.to_owned()));
    rest.insert("object".to_owned(), Value::String(object.to_owned()));
    rest.insert("created".to_owned(), Value::from(created));
    rest
}

impl ChatResponse {
    /// A complete answer translated from another vendor's format: one choice.
    pub fn translated(id: &str, created: u64, model: &str, message: Message, finish_reason: &str) -> ChatResponse {
        ChatResponse {
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason: Some(finish_reason.to_owned()),
                rest: Rest::new(),
            }],
            usage: None,
            rest: envelope(id, "chat.completion", created),
        }
    }
}

impl ChatChunk {
    /// A chunk of a translated stream: one delta of choice 0 (or none, for the usage chunk).
    pub fn translated(id: &str, created: u64, delta: Option<Value>, finish_reason: Option<&str>) -> ChatChunk {
        ChatChunk {
            model: String::new(),
            choices: delta
                .map(|delta| ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish_reason.map(str::to_owned),
                    rest: Rest::new(),
                })
                .into_iter()
                .collect(),
            usage: None,
            rest: envelope(id, "chat.completion.chunk", created),
        }
    }
}

impl Message {
    /// An assistant's answer: its text, with `null` content when it only calls tools.
    pub fn assistant(text: String, calls: Vec<ToolCall>) -> Message {
        let content = match text.is_empty() && !calls.is_empty() {
            true => Value::Null,
            false => Value::String(text),
        };
        Message {
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..Message::new("assistant", content)
        }
    }

    /// A message with just a role and content.
    pub fn new(role: &str, content: Value) -> Message {
        Message {
            role: role.to_owned(),
            content,
            tool_calls: None,
            tool_call_id: None,
            rest: Rest::new(),
        }
    }
}

impl ToolCall {
    pub fn function(id: String, name: String, arguments: String) -> ToolCall {
        ToolCall {
            id,
            kind: function_type(),
            function: FunctionCall { name, arguments },
            rest: Rest::new(),
        }
    }
}

/// A message's content as readable text: strings as they are, text parts joined, other parts
/// as a placeholder (the observer's transcript, the CLI, an answer's text).
pub fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text" | "input_text" | "output_text") => {
                    p.get("text").and_then(Value::as_str).unwrap_or_default().to_owned()
                }
                Some(kind) if kind.contains("image") => "[image]".to_owned(),
                _ => "[file]".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A request memgate forwards with little interpretation (`/v1/responses`, `/v1/embeddings`):
/// the model is routed and the rest passes through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PassthroughRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","someNewField":1}],
            "temperature":0.7,"top_p":0.9,"someNewTopField":{"a":[1,2]}}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        let back: Value = serde_json::to_value(&req).unwrap();
        let orig: Value = serde_json::from_str(body).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn assistant_tool_call_keeps_null_content() {
        let body = r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]}"#;
        let m: Message = serde_json::from_str(body).unwrap();
        let back: Value = serde_json::to_value(&m).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(body).unwrap());
    }
}
