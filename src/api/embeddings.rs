//! `POST /v1/embeddings`.
//!
//! The OpenAI Python SDK asks for `encoding_format: "base64"` by default. Several
//! OpenAI-compatible servers ignore that and answer float arrays, which the SDK would then
//! mis-decode; memgate re-encodes such answers (and Gemini's, which are always floats) so the
//! client always gets what it asked for.

use super::{parse_body, routes, send, Ctx};
use crate::error::ApiError;
use crate::http::json_response;
use crate::ir::{PassthroughRequest, Usage};
use http_types::Response;
use serde_json::Value;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: PassthroughRequest = parse_body(body)?;
    if req.rest.get("input").is_none_or(Value::is_null) {
        return Err(ApiError::invalid_param(
            "input",
            "input is required: a string or an array of strings",
        ));
    }
    let wants_base64 = req.rest.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let (_, candidates) = routes(ctx, &mut req.model, &mut req.rest)?;
    let byok = ctx.caller.byok.clone();
    let (res, answered) = send(ctx, &candidates, |c| {
        req.model.clone_from(&c.route.model);
        c.route.provider.embeddings_request(&req, c.byok(byok.as_deref()))
    })
    .await?;
    let mut answer = answered
        .route
        .provider
        .embeddings_response(&res.bytes().await?, &answered.name)?;
    if let Some(m) = answer.get_mut("model") {
        *m = Value::String(answered.name.clone());
    }
    if wants_base64 {
        for item in answer
            .get_mut("data")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(e) = item.get_mut("embedding") {
                if let Some(encoded) = floats_to_base64(e) {
                    *e = Value::String(encoded);
                }
            }
        }
    }
    if let Some(log) = &mut ctx.log {
        log.usage = answer.get("usage").and_then(Usage::from_value);
    }
    Ok(json_response(200, &answer))
}

/// A float array as base64 of little-endian f32s, the encoding OpenAI uses; `None` if `v` is
/// not an array of numbers (already base64, say).
fn floats_to_base64(v: &Value) -> Option<String> {
    let nums = v.as_array()?;
    let mut bytes = Vec::with_capacity(nums.len() * 4);
    for n in nums {
        #[allow(clippy::cast_possible_truncation)] // f32 is the wire precision of embeddings.
        bytes.extend_from_slice(&(n.as_f64()? as f32).to_le_bytes());
    }
    Some(base64(&bytes))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn floats_encode_as_little_endian_f32() {
        let v: Value = serde_json::json!([1.0, -2.5]);
        let mut bytes = 1.0f32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(-2.5f32).to_le_bytes());
        assert_eq!(floats_to_base64(&v).unwrap(), base64(&bytes));
        assert!(floats_to_base64(&Value::String("AAAA".into())).is_none());
    }
}
