//! The canonical request and response types every layer speaks.
//!
//! Inbound formats parse into these, provider adapters translate out of them, and memory reads
//! them. Each struct names only the fields memgate acts on and flattens everything else into
//! `rest`, so a field a provider adds tomorrow flows through untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

/// Token accounting as OpenAI reports it; details (cached, reasoning…) ride in `rest`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
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
            total_tokens: n("total_tokens").unwrap_or(prompt + completion),
        })
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
