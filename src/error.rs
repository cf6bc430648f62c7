//! The one error type that reaches clients, rendered in OpenAI's shape.
//!
//! Every failure on the request path (bad input, auth, routing, upstream) folds into
//! [`ApiError`]; `http/` turns it into a status and `{"error":{"message","type","param","code"}}`,
//! which is what makes the SDKs raise the right exception class.

use serde_json::{json, Value};
use std::fmt;

/// How the message of an upstream error whose body is no OpenAI error object starts (the body
/// follows): what tells a bare 404 page from an error about something the request named.
pub const UNSHAPED: &str = "upstream answered";

/// A client-facing error: an HTTP status plus the OpenAI error object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: String,
    pub code: Option<String>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, kind: &str, code: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: kind.to_owned(),
            code: code.map(str::to_owned),
            param: None,
            message: message.into(),
        }
    }

    /// An error for an HTTP-level status (408, 431, …) with the conventional type.
    pub fn new_status(status: u16, message: &str) -> Self {
        Self::new(status, default_kind(status), None, message)
    }

    /// 400: the request is malformed or names something that does not exist.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", None, message)
    }

    /// 400 with a field name, so the client can tell which argument is wrong.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::invalid(message);
        e.param = Some(param.to_owned());
        e
    }

    /// 400 `model_not_found`: the model's provider prefix is not configured.
    pub fn model_not_found(message: impl Into<String>) -> Self {
        let mut e = Self::new(400, "invalid_request_error", Some("model_not_found"), message);
        e.param = Some("model".to_owned());
        e
    }

    /// The `tools` list of a request, which must be an array.
    pub fn tools_list(v: &Value) -> Result<&Vec<Value>, ApiError> {
        v.as_array()
            .ok_or_else(|| ApiError::invalid_param("tools", "tools must be an array"))
    }

    /// 401: no gateway key, or one that is unknown or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "authentication_error", Some("invalid_api_key"), message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", Some("not_found"), message)
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            Some("method_not_allowed"),
            format!("{method} is not allowed on {path}"),
        )
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            Some("request_too_large"),
            format!("request body exceeds {limit} bytes; raise max_body_bytes in memgate.toml if this is intended"),
        )
    }

    /// 502: the upstream could not be reached or answered nonsense.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(502, "upstream_error", Some("bad_gateway"), message)
    }

    /// An upstream stream that broke off or fell silent; sent as the stream's last event.
    pub fn stream_interrupted(message: impl Into<String>) -> Self {
        Self::new(502, "upstream_error", Some("stream_interrupted"), message)
    }

    /// 504: the upstream did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(504, "upstream_error", Some("timeout"), message)
    }

    /// 500: a failure of memgate itself (storage, a bug); the message says what to check.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", Some("internal_error"), message)
    }

    /// 501: a configured provider kind whose adapter this build does not have yet.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(501, "invalid_request_error", Some("not_implemented"), message)
    }

    /// Adopts an upstream error: its status and, when it is in OpenAI's shape, its error object.
    /// Anything else becomes a message quoting (at most 1 KiB of) the body.
    pub fn from_upstream(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let obj = parsed.as_ref().and_then(|v| v.get("error"));
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let message = match obj {
            Some(Value::String(s)) => Some(s.clone()),
            Some(o) => text(o.get("message")),
            None => None,
        }
        .unwrap_or_else(|| {
            let cut = &body[..body.len().min(1024)];
            format!("{UNSHAPED} {status}: {}", String::from_utf8_lossy(cut).trim())
        });
        let kind = text(obj.and_then(|o| o.get("type"))).unwrap_or_else(|| default_kind(status).to_owned());
        let code = obj.and_then(|o| o.get("code")).and_then(|c| match c {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        ApiError {
            status,
            kind,
            code,
            param: text(obj.and_then(|o| o.get("param"))),
            message,
        }
    }

    /// The response body: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// The OpenAI `type` conventionally paired with a status.
fn default_kind(status: u16) -> &'static str {
    match status {
        401 | 403 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_openai_error_passes_through() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let e = ApiError::from_upstream(429, body);
        assert_eq!((e.status, e.kind.as_str()), (429, "requests"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.message, "Rate limit reached");
    }

    #[test]
    fn non_json_upstream_error_is_quoted_and_typed_by_status() {
        let e = ApiError::from_upstream(503, b"<html>busy</html>");
        assert_eq!(e.kind, "server_error");
        assert!(e.message.contains("<html>busy</html>"), "{}", e.message);
        let long = vec![b'x'; 5000];
        assert!(ApiError::from_upstream(500, &long).message.len() < 1100);
    }
}
