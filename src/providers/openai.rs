//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, OpenRouter…).
//!
//! The IR is this format, so the adapter only frames requests and parses bodies; every field it
//! does not know rides through in the IR's `rest` maps.

use crate::error::ApiError;
use crate::http::sse;
use crate::ir::{ChatChunk, ChatRequest};
use crate::upstream::UpstreamRequest;
use http_types::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A JSON POST to `base_url + path` with a bearer credential if there is one.
pub(super) fn post(base_url: &str, path: &str, key: Option<&str>, body: &impl Serialize) -> UpstreamRequest {
    let mut headers = vec![("accept", "application/json, text/event-stream".to_owned())];
    if let Some(k) = key {
        headers.push(("authorization", format!("Bearer {k}")));
    }
    UpstreamRequest {
        method: Method::Post,
        url: format!("{base_url}{path}"),
        headers,
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}

/// A chat request as is, less the `thinking_blocks` memgate keeps on assistant turns for
/// Anthropic: OpenAI refuses fields it does not know on a message.
pub(super) fn chat_request(base_url: &str, key: Option<&str>, req: &ChatRequest) -> UpstreamRequest {
    if !req.messages.iter().any(|m| m.rest.contains_key("thinking_blocks")) {
        return post(base_url, "/chat/completions", key, req);
    }
    let mut req = req.clone();
    for m in &mut req.messages {
        m.rest.remove("thinking_blocks");
    }
    post(base_url, "/chat/completions", key, &req)
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    super::parse_json(body)
}

/// Chat chunks as they come; `data: [DONE]` ends the answer.
#[derive(Debug, Default)]
pub struct Decoder {
    pub finished: bool,
}

impl Decoder {
    pub fn event(&mut self, ev: &sse::Event) -> Result<Vec<ChatChunk>, ApiError> {
        if ev.data == "[DONE]" {
            self.finished = true;
            return Ok(Vec::new());
        }
        let value: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            // Not JSON (a keep-alive some servers send as data): nothing for the client.
            Err(_) => return Ok(Vec::new()),
        };
        if value.get("error").is_some() {
            return Err(ApiError::from_upstream(502, ev.data.as_bytes()));
        }
        Ok(serde_json::from_value(value).map(|c| vec![c]).unwrap_or_default())
    }
}
