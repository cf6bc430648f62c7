//! What every vendor translation reads the same way: the chat format's `tools`, `tool_choice`
//! and `stop`, data URLs, and the message of a vendor error.

use crate::error::ApiError;
use crate::ir::{ChatChunk, Rest, Usage};
use serde::Serialize;
use serde_json::{json, Value};

/// Request fields of OpenAI's API and of other gateways and SDKs (OpenRouter's `models` and
/// `provider`, the Vercel AI SDK's `providerOptions`) that a native vendor API does not know and
/// would reject: an adapter maps the ones with an equivalent and drops the rest. Fields not listed
/// pass through, so a vendor's new parameter works before memgate knows it.
pub(crate) const FOREIGN: [&str; 35] = [
    "stream_options",
    "n",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "seed",
    "response_format",
    "parallel_tool_calls",
    "user",
    "max_completion_tokens",
    "max_tokens",
    "stop",
    "reasoning_effort",
    "modalities",
    "audio",
    "prediction",
    "store",
    "service_tier",
    "functions",
    "function_call",
    "web_search_options",
    "verbosity",
    "metadata",
    "prompt_cache_key",
    "safety_identifier",
    "prompt_cache_retention",
    "max_tool_calls",
    "models",
    "provider",
    "route",
    "transforms",
    "providerOptions",
    "plugins",
];

/// A request body as JSON.
pub(crate) fn json(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_default()
}

/// Parses a provider body, naming the provider's fault when it is not what its API promises.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let cut = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        ApiError::bad_gateway(format!("upstream sent an unreadable body ({e}): {cut}"))
    })
}

/// Seconds since the epoch, for the `created` field of translated answers.
pub(crate) fn created() -> u64 {
    crate::clock::now_ms() / 1000
}

/// What every chunk of a stream translated from another vendor's events carries: the answer's
/// id and time; and whether the client asked for a usage chunk at the end.
#[derive(Debug)]
pub(crate) struct Translated {
    pub(crate) include_usage: bool,
    pub(crate) id: String,
    created: u64,
}

impl Translated {
    pub(crate) fn new(include_usage: bool) -> Translated {
        Translated {
            include_usage,
            id: String::new(),
            created: created(),
        }
    }

    /// One delta of choice 0.
    pub(crate) fn chunk(&self, delta: Value, finish: Option<&str>) -> ChatChunk {
        ChatChunk::translated(&self.id, self.created, Some(delta), finish)
    }

    /// The usage chunk that ends the stream (no choices), when the client asked for one.
    pub(crate) fn usage_chunk(&self, usage: Option<Usage>) -> Option<ChatChunk> {
        self.include_usage.then(|| ChatChunk {
            usage,
            ..ChatChunk::translated(&self.id, self.created, None, None)
        })
    }
}

/// `data:MEDIA;base64,DATA` as (MEDIA, DATA).
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

/// One entry of a chat request's `tools`.
pub(crate) enum Tool<'a> {
    /// A function tool: its name, its `function` object and the whole entry.
    Function {
        name: &'a str,
        function: &'a Value,
        tool: &'a Value,
    },
    /// A tool already in the vendor's own shape, which passes through.
    Native(&'a Value),
}

/// A chat request's `tools`, each function tool checked for a name.
pub(crate) fn tools(v: &Value) -> Result<Vec<Tool<'_>>, ApiError> {
    let list = ApiError::tools_list(v)?;
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let Some(function) = tool.get("function") else {
                return Ok(Tool::Native(tool));
            };
            let name = function.get("name").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param(&format!("tools[{i}].function.name"), "a function tool needs a name")
            })?;
            Ok(Tool::Function { name, function, tool })
        })
        .collect()
}

/// A chat request's `tool_choice`.
pub(crate) enum ToolChoice<'a> {
    Auto,
    None,
    Required,
    /// An object: the function it names, if it names one the chat way (`function.name`).
    Named(Option<&'a str>),
}

/// Reads `tool_choice`; a string other than the three the chat format defines is refused.
pub(crate) fn tool_choice(v: &Value) -> Result<ToolChoice<'_>, ApiError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(ApiError::invalid_param(
                "tool_choice",
                format!("tool_choice {other:?} is not auto, none, required or a named function"),
            )),
        },
        Value::Object(o) => Ok(ToolChoice::Named(
            o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str),
        )),
        _ => Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice must be a string or an object",
        )),
    }
}

/// The chat `stop` field (a string or a list) as a list of stop sequences; none for an empty
/// list or no field.
pub(crate) fn stop_sequences(rest: &Rest) -> Option<Value> {
    match rest.get("stop") {
        Some(Value::String(s)) => Some(json!([s])),
        Some(Value::Array(a)) if !a.is_empty() => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// A vendor's error object as an OpenAI error: its `message` with the (status, type, code)
/// `class` gives it, or, for an error type memgate does not know, one classed by `status`.
pub(crate) fn vendor_error(status: u16, e: &Value, class: Option<(u16, &str, Option<&str>)>) -> ApiError {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error")
        .to_owned();
    match class {
        Some((status, kind, code)) => ApiError::new(status, kind, code, message),
        None => unnamed_error(status, message),
    }
}

/// A vendor error of a type memgate does not know, classed by its status; one that came with
/// a success status (inside a stream) is the upstream's failure, 502.
fn unnamed_error(status: u16, message: String) -> ApiError {
    match status {
        400..=499 => ApiError::new(status, "invalid_request_error", None, message),
        500.. => ApiError::new(status, "server_error", None, message),
        _ => ApiError::new(502, "server_error", None, message),
    }
}
