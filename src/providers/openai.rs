//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, OpenRouter…): paths
//! under the base URL and a bearer credential; the body is [`crate::wire::openai`]'s.

use crate::ir::ChatRequest;
use crate::upstream::UpstreamRequest;
use crate::wire::openai::{chat_body, StreamUsage};
use http_types::Method;
use serde::Serialize;

/// A JSON POST to `base_url + path` with a bearer credential if there is one.
pub(super) fn post(base_url: &str, path: &str, key: Option<&str>, body: &impl Serialize) -> UpstreamRequest {
    request(Method::Post, base_url, path, key, super::json(body))
}

/// A GET of `base_url + path` (the model list).
pub(super) fn get(base_url: &str, path: &str, key: Option<&str>) -> UpstreamRequest {
    request(Method::Get, base_url, path, key, Vec::new())
}

fn request(method: Method, base_url: &str, path: &str, key: Option<&str>, body: Vec<u8>) -> UpstreamRequest {
    let credential = key.map(|k| ("authorization", format!("Bearer {k}")));
    super::request(method, format!("{base_url}{path}"), Vec::new(), credential, body)
}

/// A chat request for `base_url`; see [`chat_body`] for what changes on the way.
pub(super) fn chat_request(
    base_url: &str,
    key: Option<&str>,
    req: &ChatRequest,
    usage: StreamUsage,
) -> UpstreamRequest {
    // OpenAI's reasoning models refuse `max_tokens`; servers compatible with OpenAI's API
    // (llama-cpp-python, Ollama) ignore `max_completion_tokens`, and would generate until the
    // context is full.
    let mirror = !serves_openai_models(base_url);
    let body = chat_body(req, mirror, usage);
    request(Method::Post, base_url, "/chat/completions", key, body)
}

/// Whether `base_url` is OpenAI's own API or Azure's (whose reasoning models refuse
/// `max_tokens`).
fn serves_openai_models(base_url: &str) -> bool {
    let host = base_url.split("://").nth(1).unwrap_or_default();
    let host = host.split(['/', ':']).next().unwrap_or_default().to_ascii_lowercase();
    host == "api.openai.com" || host.ends_with(".azure.com")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serde_json::Value;

    fn sent(base_url: &str, req: Value) -> Value {
        sent_with(base_url, req, StreamUsage::Ask)
    }

    fn sent_with(base_url: &str, req: Value, usage: StreamUsage) -> Value {
        let req: ChatRequest = serde_json::from_value(req).unwrap();
        serde_json::from_slice(&chat_request(base_url, None, &req, usage).body).unwrap()
    }

    #[test]
    fn stream_options_are_left_as_sent_or_out_when_refused() {
        let local = "http://127.0.0.1:8080/v1";
        let bare = json!({"model": "m", "messages": [], "stream": true});
        let asked = json!({"model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": true}});
        let own =
            json!({"model": "m", "messages": [], "stream": true, "stream_options": {"continuous_usage_stats": true}});
        for usage in [StreamUsage::AsSent, StreamUsage::Refused] {
            assert_eq!(sent_with(local, bare.clone(), usage), bare, "{usage:?}");
            assert_eq!(sent_with(local, own.clone(), usage), own, "{usage:?}");
        }
        assert_eq!(sent_with(local, asked.clone(), StreamUsage::AsSent), asked);
        // A translation's (or a client's) bare usage ask is given by memgate instead.
        assert_eq!(sent_with(local, asked, StreamUsage::Refused), bare);
    }

    #[test]
    fn streams_ask_for_usage_and_compatible_servers_get_max_tokens() {
        let local = "http://127.0.0.1:8080/v1";
        let body = sent(
            local,
            json!({"model": "m", "messages": [], "stream": true,
            "stream_options": {"continuous_usage_stats": true}, "max_completion_tokens": 9, "seed": 1}),
        );
        assert_eq!(
            body,
            json!({"model": "m", "messages": [], "stream": true,
                "stream_options": {"continuous_usage_stats": true, "include_usage": true},
                "max_completion_tokens": 9, "max_tokens": 9, "seed": 1})
        );
        // Key order is kept: the options' place, then the added ones last.
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "model",
                "messages",
                "stream",
                "stream_options",
                "max_completion_tokens",
                "max_tokens",
                "seed"
            ]
        );
        let plain = json!({"model": "m", "messages": [], "temperature": 0});
        assert_eq!(sent(local, plain.clone()), plain);
        // A client's own max_tokens wins; OpenAI itself never gets max_tokens added (its
        // reasoning models refuse it).
        let both = json!({"model": "m", "messages": [], "max_tokens": 3, "max_completion_tokens": 9});
        assert_eq!(sent(local, both.clone()), both);
        for openai in [
            "https://api.openai.com/v1",
            "https://API.OPENAI.COM:443/v1",
            "https://me.openai.azure.com/openai/v1",
        ] {
            let body = sent(
                openai,
                json!({"model": "m", "messages": [], "max_completion_tokens": 9}),
            );
            assert!(body.get("max_tokens").is_none(), "{openai}");
        }
        assert!(sent(local, json!({"model": "m", "messages": [], "stream": false}))
            .get("stream_options")
            .is_none());
    }
}
