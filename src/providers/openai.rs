//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, OpenRouter…).
//!
//! The IR is this format, so the adapter only frames requests and parses bodies; every field it
//! does not know rides through in the IR's `rest` maps.

use crate::error::ApiError;
use crate::upstream::UpstreamRequest;
use http_types::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// Parses an upstream body, naming the provider's fault when it is not what the API promises.
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let cut = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        ApiError::bad_gateway(format!("upstream sent an unreadable body ({e}): {cut}"))
    })
}
