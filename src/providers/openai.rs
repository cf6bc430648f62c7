//! OpenAI-compatible servers (OpenAI, vLLM, llama.cpp, Ollama, LM Studio, OpenRouter…).
//!
//! The IR is this format, so the adapter only frames requests and parses bodies; every field it
//! does not know rides through in the IR's `rest` maps.

use crate::error::ApiError;
use crate::http::sse;
use crate::ir::{ChatChunk, ChatRequest, Usage};
use crate::upstream::UpstreamRequest;
use http_types::Method;
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

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

/// A chat request as is, less the `thinking_blocks` memgate keeps on assistant turns for
/// Anthropic (OpenAI refuses fields it does not know on a message); see [`Wire`] for what is
/// added.
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
    if !req.messages.iter().any(|m| m.rest.contains_key("thinking_blocks")) {
        return post(base_url, "/chat/completions", key, &Wire { req, mirror, usage });
    }
    let mut req = req.clone();
    for m in &mut req.messages {
        m.rest.remove("thinking_blocks");
    }
    post(
        base_url,
        "/chat/completions",
        key,
        &Wire {
            req: &req,
            mirror,
            usage,
        },
    )
}

/// What a stream's `stream_options` become upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamUsage {
    /// `include_usage: true` added (other options kept).
    Ask,
    /// As the client sent them (`stream_usage = false`).
    AsSent,
    /// The upstream refuses the field: left out when it only asks for usage (memgate's own ask,
    /// or a translation's), which memgate then gives by estimate; a client's other options kept.
    Refused,
}

/// Whether `base_url` is OpenAI's own API or Azure's (whose reasoning models refuse
/// `max_tokens`).
fn serves_openai_models(base_url: &str) -> bool {
    let host = base_url.split("://").nth(1).unwrap_or_default();
    let host = host.split(['/', ':']).next().unwrap_or_default().to_ascii_lowercase();
    host == "api.openai.com" || host.ends_with(".azure.com")
}

/// A chat request serialised as it goes upstream, without copying its messages: a stream asks
/// for its usage chunk (`stream_options.include_usage`, other options kept) as `usage` says,
/// which the [`Decoder`] keeps from a client that did not ask for it, since without it usage,
/// rate limits and metrics would count nothing; with `mirror`, `max_completion_tokens` is sent
/// as `max_tokens` too, unless that is given.
struct Wire<'a> {
    req: &'a ChatRequest,
    mirror: bool,
    usage: StreamUsage,
}

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let req = self.req;
        let mirrored = self
            .mirror
            .then(|| req.rest.get("max_completion_tokens"))
            .flatten()
            .filter(|_| !req.rest.contains_key("max_tokens"));
        let rewrite = req.is_stream() && self.usage != StreamUsage::AsSent;
        if !rewrite && mirrored.is_none() {
            return req.serialize(s);
        }
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model", &req.model)?;
        map.serialize_entry("messages", &req.messages)?;
        if let Some(stream) = req.stream {
            map.serialize_entry("stream", &stream)?;
        }
        let mut asked = false;
        for (k, v) in &req.rest {
            if k == "stream_options" && rewrite {
                let mut options = v.as_object().cloned().unwrap_or_default();
                asked = true;
                match self.usage {
                    StreamUsage::Refused if options.keys().all(|k| k == "include_usage") => continue,
                    StreamUsage::Refused | StreamUsage::AsSent => {}
                    StreamUsage::Ask => {
                        options.insert("include_usage".to_owned(), Value::Bool(true));
                    }
                }
                map.serialize_entry(k, &options)?;
            } else {
                map.serialize_entry(k, v)?;
            }
            if k == "max_completion_tokens" {
                if let Some(max) = mirrored {
                    map.serialize_entry("max_tokens", max)?;
                }
            }
        }
        if rewrite && !asked && self.usage == StreamUsage::Ask {
            map.serialize_entry("stream_options", &serde_json::json!({"include_usage": true}))?;
        }
        map.end()
    }
}

pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    super::parse_json(body)
}

/// Chat chunks as they come; `data: [DONE]` ends the answer. The usage the upstream reports is
/// kept; a client that did not ask for it (`include_usage`) gets no usage chunk, as from OpenAI.
#[derive(Debug, Default)]
pub struct Decoder {
    pub finished: bool,
    pub include_usage: bool,
    pub usage: Option<Usage>,
}

impl Decoder {
    pub fn new(include_usage: bool) -> Decoder {
        Decoder {
            include_usage,
            ..Decoder::default()
        }
    }

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
        let Ok(mut chunk) = serde_json::from_value::<ChatChunk>(value) else {
            return Ok(Vec::new());
        };
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
            if !self.include_usage {
                chunk.usage = None;
                if chunk.choices.is_empty() {
                    return Ok(Vec::new());
                }
            }
        }
        Ok(vec![chunk])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_usage_chunk_is_kept_from_a_client_that_did_not_ask() {
        let usage = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
        let ev = |d: &str| sse::Event {
            event: None,
            data: d.to_owned(),
        };
        for asked in [false, true] {
            let mut d = Decoder::new(asked);
            assert_eq!(d.event(&ev(text)).unwrap().len(), 1);
            assert_eq!(d.event(&ev(usage)).unwrap().len(), usize::from(asked));
            assert_eq!(d.usage.as_ref().map(|u| u.total_tokens), Some(5));
            assert!(d.event(&ev("[DONE]")).unwrap().is_empty() && d.finished);
        }
    }
}
