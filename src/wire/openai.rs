//! OpenAI's chat completions format, which the IR is: requests go out as they are (less what
//! memgate keeps for other vendors) and every field memgate does not know rides through in the
//! IR's `rest` maps.

use super::common::{json, parse_json};
use crate::error::ApiError;
use crate::ir::{ChatChunk, ChatRequest, Usage};
use serde::de::DeserializeOwned;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A chat request's body as is, less the `thinking_blocks` memgate keeps on assistant turns for
/// Anthropic (OpenAI refuses fields it does not know on a message); see [`Wire`] for what is
/// added.
pub(crate) fn chat_body(req: &ChatRequest, mirror: bool, usage: StreamUsage) -> Vec<u8> {
    if !req.messages.iter().any(|m| m.rest.contains_key("thinking_blocks")) {
        return json(&Wire { req, mirror, usage });
    }
    let mut req = req.clone();
    for m in &mut req.messages {
        m.rest.remove("thinking_blocks");
    }
    json(&Wire {
        req: &req,
        mirror,
        usage,
    })
}

/// What a stream's `stream_options` become upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamUsage {
    /// `include_usage: true` added (other options kept).
    Ask,
    /// As the client sent them (`stream_usage = false`).
    AsSent,
    /// The upstream refuses the field: left out when it only asks for usage (memgate's own ask,
    /// or a translation's), which memgate then gives by estimate; a client's other options kept.
    Refused,
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

/// An answer in OpenAI's format (a chat completion, an embeddings list).
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json(body)
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

    /// The chunks one stream event's data carries.
    pub fn event(&mut self, data: &str) -> Result<Vec<ChatChunk>, ApiError> {
        if data == "[DONE]" {
            self.finished = true;
            return Ok(Vec::new());
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            // Not JSON (a keep-alive some servers send as data): nothing for the client.
            Err(_) => return Ok(Vec::new()),
        };
        if value.get("error").is_some() {
            return Err(ApiError::from_upstream(502, data.as_bytes()));
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

    #[test]
    fn a_usage_chunk_is_kept_from_a_client_that_did_not_ask() {
        let usage = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let text = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
        for asked in [false, true] {
            let mut d = Decoder::new(asked);
            assert_eq!(d.event(text).unwrap().len(), 1);
            assert_eq!(d.event(usage).unwrap().len(), usize::from(asked));
            assert_eq!(d.usage.as_ref().map(|u| u.total_tokens), Some(5));
            assert!(d.event("[DONE]").unwrap().is_empty() && d.finished);
        }
    }
}
