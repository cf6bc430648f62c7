//! Anthropic (`POST {base_url}/v1/messages`, `x-api-key`); the body is
//! [`crate::wire::anthropic`]'s.

use crate::error::ApiError;
use crate::ir::ChatRequest;
use crate::upstream::UpstreamRequest;
use crate::wire::anthropic::messages_body;
use http_types::Method;
use serde_json::{Map, Value};

/// The API version memgate's translation is written against.
const VERSION: &str = "2023-06-01";

pub(super) fn chat_request(base_url: &str, key: Option<&str>, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
    Ok(post(base_url, key, &messages_body(req)?))
}

/// A Messages API request with Anthropic's headers.
pub(super) fn post(base_url: &str, key: Option<&str>, body: &Map<String, Value>) -> UpstreamRequest {
    super::request(
        Method::Post,
        format!("{base_url}/v1/messages"),
        vec![("anthropic-version", VERSION.to_owned())],
        key.map(|k| ("x-api-key", k.to_owned())),
        super::json(body),
    )
}
