//! Google's Gemini API (`{base_url}/v1beta/models/{model}:METHOD`, `x-goog-api-key`); the
//! bodies are [`crate::wire::gemini`]'s.

use crate::error::ApiError;
use crate::ir::{ChatRequest, PassthroughRequest};
use crate::upstream::UpstreamRequest;
use crate::wire::gemini::{embeddings_body, generate_body, model_path};
use http_types::Method;

fn request(base_url: &str, key: Option<&str>, path: String, body: &impl serde::Serialize) -> UpstreamRequest {
    super::request(
        Method::Post,
        format!("{base_url}/v1beta/models/{path}"),
        Vec::new(),
        key.map(|k| ("x-goog-api-key", k.to_owned())),
        super::json(body),
    )
}

/// The model as one URL path segment under `/v1beta/models/`, sent with the operator's key.
/// Bytes outside RFC 3986's unreserved set are percent-encoded, so `?`, `#`, `%` or `:` cannot
/// end the segment, start a query or name another method. A `/`, `.` or `..` would leave the
/// segment (servers decode `%2F` or normalise dot segments), so such a name is refused.
fn model_segment(model: &str) -> Result<String, ApiError> {
    let name = model_path(model);
    if matches!(name, "" | "." | "..") || name.contains('/') {
        return Err(ApiError::invalid_param(
            "model",
            format!("{model:?} is not a Gemini model name: it must be one path segment, such as gemini-2.5-flash"),
        ));
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

pub(super) fn chat_request(base_url: &str, key: Option<&str>, req: &ChatRequest) -> Result<UpstreamRequest, ApiError> {
    let body = generate_body(req)?;
    let model = model_segment(&req.model)?;
    let path = if req.is_stream() {
        format!("{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{model}:generateContent")
    };
    Ok(request(base_url, key, path, &body))
}

/// An OpenAI embeddings request as `embedContent` (one string) or `batchEmbedContents`.
pub(super) fn embeddings_request(
    base_url: &str,
    key: Option<&str>,
    req: &PassthroughRequest,
) -> Result<UpstreamRequest, ApiError> {
    let model = model_segment(&req.model)?;
    let (method, body) = embeddings_body(req)?;
    Ok(request(base_url, key, format!("{model}:{method}"), &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_stays_one_path_segment() {
        assert_eq!(model_segment("models/gemini-2.5-flash").unwrap(), "gemini-2.5-flash");
        assert_eq!(
            model_segment("x?key=a#b%2e:y é").unwrap(),
            "x%3Fkey%3Da%23b%252e%3Ay%20%C3%A9"
        );
        for bad in [
            "../../v1beta/tunedModels#x",
            "models/..",
            ".",
            "",
            "tunedModels/x",
            "a/b",
        ] {
            assert_eq!(model_segment(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
