//! Google's Gemini API format (`generateContent`, `embedContent`).
//!
//! Chat turns become `contents` with roles `user` and `model`; system turns become
//! `systemInstruction`; sampling fields move into `generationConfig`; tools become
//! `functionDeclarations` with their schema reduced to what Gemini accepts ([`super::schema`]).
//! Gemini's function calls carry no id the chat format could use, so memgate gives each a unique
//! one, and a tool result finds its function's name through the assistant turn that holds the id.
//! A function call's `thoughtSignature` rides in the tool call twice: as
//! `extra_content.google.thought_signature` (Google's own OpenAI-compatible convention) and at
//! the end of its id, which every inbound format (and memory) carries back.

use super::common::{self, created, parse_json, Tool, ToolChoice, Translated};
use super::schema;
use crate::error::ApiError;
use crate::ir::{random_id, ChatChunk, ChatRequest, ChatResponse, Message, PassthroughRequest, ToolCall, Usage};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Joins a call id and its thought signature in the id memgate gives the client, so the
/// signature comes back with any client that returns the id (every API does), not only those
/// that keep `extra_content`.
const SIGNATURE_IN_ID: &str = "__thought__";

/// OpenAI sampling fields and their `generationConfig` names.
const GENERATION: [(&str, &str); 9] = [
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("max_completion_tokens", "maxOutputTokens"),
    ("max_tokens", "maxOutputTokens"),
    ("n", "candidateCount"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
];

/// The model as Gemini's path names it (`models/x` and `x` are the same model).
pub(crate) fn model_path(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

pub(crate) fn generate_body(req: &ChatRequest) -> Result<Map<String, Value>, ApiError> {
    let mut body = Map::new();
    let (system, contents) = contents(&req.messages, model_path(&req.model).starts_with("gemini-3"))?;
    body.insert("contents".to_owned(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".to_owned(), json!({"parts": system}));
    }
    let mut config = Map::new();
    for (from, to) in GENERATION {
        if let Some(v) = req.rest.get(from).filter(|v| !v.is_null()) {
            config.entry(to.to_owned()).or_insert_with(|| v.clone());
        }
    }
    if let Some(stop) = common::stop_sequences(&req.rest) {
        config.insert("stopSequences".to_owned(), stop);
    }
    if let Some(f) = req.rest.get("response_format") {
        response_format(f, &mut config);
    }
    if let Some(thinking) = req
        .rest
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(|e| thinking_config(model_path(&req.model), e))
    {
        config.insert("thinkingConfig".to_owned(), thinking);
    }
    for (k, v) in &req.rest {
        match k.as_str() {
            "tools" => {
                body.insert("tools".to_owned(), tools(v)?);
            }
            "tool_choice" => {
                body.insert("toolConfig".to_owned(), tool_config(v)?);
            }
            // A client's own generationConfig (extra_body) adds to what was mapped.
            "generationConfig" => {
                for (ck, cv) in v.as_object().into_iter().flatten() {
                    config.insert(ck.clone(), cv.clone());
                }
            }
            _ if v.is_null() || common::FOREIGN.contains(&k.as_str()) || GENERATION.iter().any(|(f, _)| f == k) => {}
            _ => {
                body.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }
    Ok(body)
}

/// OpenAI's `reasoning_effort` as the model's `thinkingConfig`: Gemini 3 takes a level, 2.5 a
/// token budget (which only Flash models may set to 0).
fn thinking_config(model: &str, effort: &str) -> Option<Value> {
    if model.starts_with("gemini-3") {
        let level = match effort {
            "none" | "minimal" | "low" => "low",
            "medium" | "high" => "high",
            _ => return None,
        };
        return Some(json!({"thinkingLevel": level}));
    }
    let budget = match effort {
        "none" | "minimal" if model.contains("flash") => 0,
        "none" | "minimal" => 128,
        "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        _ => return None,
    };
    Some(json!({"thinkingBudget": budget}))
}

/// `response_format` as Gemini's MIME type and schema.
fn response_format(f: &Value, config: &mut Map<String, Value>) {
    match f.get("type").and_then(Value::as_str) {
        Some("json_object") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        Some("json_schema") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            if let Some(s) = f.get("json_schema").and_then(|j| j.get("schema")) {
                config.insert("responseSchema".to_owned(), schema::reduce(s));
            }
        }
        _ => {}
    }
}

/// Chat messages as (system parts, contents).
fn contents(messages: &[Message], gemini_3: bool) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut system = Vec::new();
    let mut out: Vec<(&str, Vec<Value>)> = Vec::new();
    // Tool results name their call by id; Gemini wants the function's name.
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in messages.iter().enumerate() {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(parts(&m.content));
                continue;
            }
            "user" => ("user", parts(&m.content)),
            "assistant" => {
                let mut p = parts(&m.content);
                for call in m.tool_calls.iter().flatten() {
                    names.insert(&call.id, &call.function.name);
                    p.push(function_call_part(call, gemini_3));
                }
                ("model", p)
            }
            "tool" => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = names.get(id).copied().ok_or_else(|| {
                    ApiError::invalid_param(
                        &format!("messages[{i}].tool_call_id"),
                        format!("tool result {id:?} answers no tool call of an earlier assistant message"),
                    )
                })?;
                let text = crate::ir::content_text(&m.content);
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": text}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => {
                return Err(ApiError::invalid_param(
                    &format!("messages[{i}].role"),
                    format!("role {other:?} is not one of system, developer, user, assistant, tool"),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((last, p)) if *last == role => p.extend(parts),
            _ => out.push((role, parts)),
        }
    }
    let contents = out
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    Ok((system, contents))
}

fn function_call_part(call: &ToolCall, gemini_3: bool) -> Value {
    let args: Value = serde_json::from_str(&call.function.arguments)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut part = json!({"functionCall": {"name": call.function.name, "args": args}});
    let from_id = call
        .id
        .split_once(SIGNATURE_IN_ID)
        .map(|(_, sig)| Value::String(sig.to_owned()));
    let signature = call
        .rest
        .get("extra_content")
        .and_then(|x| x.pointer("/google/thought_signature"))
        .cloned()
        .or(from_id);
    match signature {
        Some(sig) => part["thoughtSignature"] = sig,
        // A call Gemini 3 did not make (another model's, in a shared history) carries the
        // placeholder Google documents for it, or the request is refused.
        None if gemini_3 => part["thoughtSignature"] = json!("skip_thought_signature_validator"),
        None => {}
    }
    part
}

fn parts(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![json!({"text": s})],
        Value::Array(items) => items.iter().filter_map(part).collect(),
        _ => Vec::new(),
    }
}

fn part(p: &Value) -> Option<Value> {
    Some(match p.get("type").and_then(Value::as_str)? {
        // Gemini refuses a part with empty text.
        "text" => json!({"text": p.get("text").and_then(Value::as_str).filter(|t| !t.is_empty())?}),
        "image_url" => media(
            p.get("image_url")
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)?,
        ),
        "file" => media(p.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str)?),
        // Parts already in Gemini's shape (inlineData, fileData…) pass through.
        _ => p.clone(),
    })
}

/// Inline data for a data URL, a file reference otherwise.
fn media(url: &str) -> Value {
    match common::data_url(url) {
        Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
        None => json!({"fileData": {"mimeType": mime_of(url), "fileUri": url}}),
    }
}

fn mime_of(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    let ext = path.rsplit('.').next().unwrap_or_default();
    match ext {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

fn tools(v: &Value) -> Result<Value, ApiError> {
    let mut declarations = Vec::new();
    let mut native = Vec::new();
    for t in common::tools(v)? {
        let (name, f) = match t {
            // Gemini's own tools (googleSearch, codeExecution…) pass through.
            Tool::Native(t) => {
                native.push(t.clone());
                continue;
            }
            Tool::Function { name, function, .. } => (name, function),
        };
        let mut d = json!({"name": name});
        if let Some(desc) = f.get("description") {
            d["description"] = desc.clone();
        }
        // A function without properties is declared without parameters: Gemini rejects an
        // OBJECT schema with none.
        if let Some(p) = f.get("parameters").map(schema::reduce) {
            if p.get("properties")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                d["parameters"] = p;
            }
        }
        declarations.push(d);
    }
    if !declarations.is_empty() {
        native.insert(0, json!({"functionDeclarations": declarations}));
    }
    Ok(Value::Array(native))
}

fn tool_config(v: &Value) -> Result<Value, ApiError> {
    let config = match common::tool_choice(v)? {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Named(Some(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        ToolChoice::Named(None) => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "a named tool_choice needs function.name",
            ))
        }
    };
    Ok(json!({"functionCallingConfig": config}))
}

/// Gemini's `finishReason` as OpenAI's, given whether the reply calls functions.
fn finish_reason(reason: &str, calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => "content_filter",
        _ if calls => "tool_calls",
        _ => "stop",
    }
}

fn usage(m: &Value) -> Usage {
    let n = |k: &str| m.get(k).and_then(Value::as_u64);
    let thoughts = n("thoughtsTokenCount");
    let prompt = n("promptTokenCount").unwrap_or(0);
    let completion = n("candidatesTokenCount")
        .unwrap_or(0)
        .saturating_add(thoughts.unwrap_or(0));
    let mut u = Usage::counted(prompt, completion, n("cachedContentTokenCount"), thoughts);
    if let Some(total) = n("totalTokenCount") {
        u.total_tokens = total;
    }
    u
}

/// What one candidate's parts say: text, thought text and function calls.
#[derive(Default)]
struct Parts {
    text: String,
    thought: String,
    calls: Vec<ToolCall>,
}

/// Reads the first candidate of a `GenerateContentResponse`.
fn read_parts(response: &Value) -> Parts {
    let mut out = Parts::default();
    let parts = response
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array);
    for p in parts.into_iter().flatten() {
        if let Some(f) = p.get("functionCall") {
            let mut id = f
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| random_id("call_"), str::to_owned);
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let args = f.get("args").cloned().unwrap_or_else(|| json!({}));
            let sig = p.get("thoughtSignature").and_then(Value::as_str);
            if let Some(sig) = sig {
                id = format!("{id}{SIGNATURE_IN_ID}{sig}");
            }
            let mut call = ToolCall::function(id, name, args.to_string());
            if let Some(sig) = sig {
                call.rest.insert(
                    "extra_content".to_owned(),
                    json!({"google": {"thought_signature": sig}}),
                );
            }
            out.calls.push(call);
        } else if let Some(t) = p.get("text").and_then(Value::as_str) {
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                out.thought.push_str(t);
            } else {
                out.text.push_str(t);
            }
        }
    }
    out
}

/// Why there is no answer: a candidate's finish reason or the prompt's block reason.
fn reason_of(v: &Value) -> Option<&str> {
    let candidate = v.get("candidates").and_then(|c| c.get(0));
    candidate
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/promptFeedback/blockReason").map(|_| "SAFETY"))
}

pub(crate) fn chat_response(body: &[u8]) -> Result<ChatResponse, ApiError> {
    let v: Value = parse_json(body)?;
    let p = read_parts(&v);
    let finish = finish_reason(reason_of(&v).unwrap_or("STOP"), !p.calls.is_empty());
    let mut message = Message::assistant(p.text, p.calls);
    if !p.thought.is_empty() {
        message
            .rest
            .insert("reasoning_content".to_owned(), Value::String(p.thought));
    }
    let str_of = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    Ok(ChatResponse {
        usage: v.get("usageMetadata").map(usage),
        ..ChatResponse::translated(str_of("responseId"), created(), str_of("modelVersion"), message, finish)
    })
}

/// A Gemini error (`{"error":{"code","message","status","details"}}`) as the OpenAI error of
/// the same meaning. A bad key is a 400 to Gemini but an authentication error to a client.
pub(crate) fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // A stream's error can arrive wrapped in an array.
    let e = v.get("error").or_else(|| v.get(0).and_then(|x| x.get("error")));
    let Some(e) = e.filter(|e| e.is_object()) else {
        return ApiError::from_upstream(status, body);
    };
    error_object(status, e)
}

fn error_object(status: u16, e: &Value) -> ApiError {
    let bad_key = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    let class = match (e.get("status").and_then(Value::as_str).unwrap_or_default(), bad_key) {
        (_, true) | ("UNAUTHENTICATED", _) => Some((401, "authentication_error", Some("invalid_api_key"))),
        ("PERMISSION_DENIED", _) => Some((403, "permission_error", None)),
        ("NOT_FOUND", _) => Some((404, "not_found_error", Some("model_not_found"))),
        ("RESOURCE_EXHAUSTED", _) => Some((429, "rate_limit_error", Some("rate_limit_exceeded"))),
        ("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE", _) => Some((400, "invalid_request_error", None)),
        ("UNAVAILABLE", _) => Some((503, "server_error", Some("overloaded"))),
        ("DEADLINE_EXCEEDED", _) => Some((504, "server_error", Some("timeout"))),
        _ => None,
    };
    common::vendor_error(status, e, class)
}

/// Gemini stream events (each a whole `GenerateContentResponse`) in, chat chunks out.
/// A chunk with a `finishReason` ends the answer; usage counts are cumulative on every chunk.
#[derive(Debug)]
pub struct Decoder {
    pub(crate) stream: Translated,
    started: bool,
    calls: usize,
    usage: Option<Usage>,
    finished: bool,
}

impl Decoder {
    pub fn new(include_usage: bool) -> Decoder {
        Decoder {
            stream: Translated::new(include_usage),
            started: false,
            calls: 0,
            usage: None,
            finished: false,
        }
    }

    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// The chunks one stream event's data carries.
    pub fn event(&mut self, data: &str) -> Result<Vec<ChatChunk>, ApiError> {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return Ok(Vec::new());
        };
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            return Err(error_object(500, e));
        }
        let mut out = Vec::new();
        let chunk = |d: &Decoder, delta: Value, finish: Option<&str>| d.stream.chunk(delta, finish);
        if !self.started {
            self.started = true;
            self.stream.id = v
                .get("responseId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.push(chunk(self, json!({"role": "assistant", "content": ""}), None));
        }
        if let Some(m) = v.get("usageMetadata") {
            self.usage = Some(usage(m));
        }
        let p = read_parts(&v);
        if !p.thought.is_empty() {
            out.push(chunk(self, json!({"reasoning_content": p.thought}), None));
        }
        if !p.text.is_empty() {
            out.push(chunk(self, json!({"content": p.text}), None));
        }
        // Gemini sends a call whole; it goes out as OpenAI streams one: a first delta with
        // the id, name and empty arguments, then the arguments.
        for c in &p.calls {
            let index = self.calls;
            self.calls += 1;
            let mut start = json!({"index": index, "id": c.id, "type": "function",
                "function": {"name": c.function.name, "arguments": ""}});
            if let Some(x) = c.rest.get("extra_content") {
                start["extra_content"] = x.clone();
            }
            out.push(chunk(self, json!({"tool_calls": [start]}), None));
            let args = json!({"index": index, "function": {"arguments": c.function.arguments}});
            out.push(chunk(self, json!({"tool_calls": [args]}), None));
        }
        if let Some(reason) = reason_of(&v) {
            self.finished = true;
            out.push(chunk(self, json!({}), Some(finish_reason(reason, self.calls > 0))));
            out.extend(self.stream.usage_chunk(self.usage.clone()));
        }
        Ok(out)
    }
}

/// An OpenAI embeddings request as the body of `embedContent` (one string) or
/// `batchEmbedContents`, with the method's name.
pub(crate) fn embeddings_body(req: &PassthroughRequest) -> Result<(&'static str, Value), ApiError> {
    let dims = req.rest.get("dimensions").and_then(Value::as_u64);
    let content = |text: &str| {
        let mut c = json!({"content": {"parts": [{"text": text}]}});
        if let Some(d) = dims {
            c["outputDimensionality"] = Value::from(d);
        }
        c
    };
    let not_text = || {
        ApiError::invalid_param(
            "input",
            "Gemini embeds text only: input must be a string or an array of strings (not token ids)",
        )
    };
    match req.rest.get("input") {
        Some(Value::String(s)) => Ok(("embedContent", content(s))),
        Some(Value::Array(items)) => {
            let requests = items
                .iter()
                .map(|i| {
                    let mut c = content(i.as_str().ok_or_else(not_text)?);
                    c["model"] = Value::String(format!("models/{}", model_path(&req.model)));
                    Ok(c)
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok(("batchEmbedContents", json!({"requests": requests})))
        }
        _ => Err(not_text()),
    }
}

/// `{"embedding":{…}}` or `{"embeddings":[…]}` in OpenAI's list shape.
pub(crate) fn embeddings_response(body: &[u8], model: &str) -> Result<Value, ApiError> {
    let v: Value = parse_json(body)?;
    let vectors: Vec<&Value> = match (v.get("embedding"), v.get("embeddings").and_then(Value::as_array)) {
        (Some(e), _) => vec![e],
        (None, Some(list)) => list.iter().collect(),
        _ => {
            return Err(ApiError::bad_gateway(
                "Gemini sent an embeddings answer without embeddings",
            ))
        }
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.get("values").cloned().unwrap_or(json!([]))}))
        .collect();
    // Gemini reports no token counts for embeddings.
    Ok(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_maps_to_contents_with_names_for_results() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "gemini-2.5-flash", "temperature": 0.1, "max_tokens": 50, "stop": ["x"],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "weather in Boston"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"Boston\"}"},
                    "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
                {"role": "tool", "tool_call_id": "call_7", "content": "72F"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "additionalProperties": false}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
        }))
        .unwrap();
        let b = Value::Object(generate_body(&r).unwrap());
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(
            b["generationConfig"],
            json!({"temperature": 0.1, "maxOutputTokens": 50, "stopSequences": ["x"]})
        );
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(b["contents"][1]["parts"][0]["thoughtSignature"], "c2ln");
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "get_weather", "response": {"result": "72F"}})
        );
        assert!(b["tools"][0]["functionDeclarations"][0]["parameters"]
            .get("additionalProperties")
            .is_none());
        assert_eq!(
            b["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"],
            json!(["get_weather"])
        );
        let orphan: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
        .unwrap();
        assert_eq!(generate_body(&orphan).unwrap_err().status, 400);
    }

    #[test]
    fn thought_signatures_come_back_through_the_call_id() {
        let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}},"thoughtSignature":"c2ln+/="}]},"finishReason":"STOP"}]}"#;
        let call = chat_response(body).unwrap().choices[0]
            .message
            .tool_calls
            .clone()
            .unwrap()[0]
            .clone();
        assert!(
            call.id.starts_with("call_") && call.id.ends_with("__thought__c2ln+/="),
            "{}",
            call.id
        );
        // A client that keeps only the id (Anthropic's or the Responses format) still returns it.
        let bare = ToolCall::function(call.id.clone(), "f".into(), "{}".into());
        assert_eq!(function_call_part(&bare, false)["thoughtSignature"], "c2ln+/=");
        let foreign = ToolCall::function("toolu_1".into(), "f".into(), "{}".into());
        assert!(function_call_part(&foreign, false).get("thoughtSignature").is_none());
        assert_eq!(
            function_call_part(&foreign, true)["thoughtSignature"],
            "skip_thought_signature_validator"
        );
    }

    #[test]
    fn function_calls_finish_as_tool_calls_with_unique_ids() {
        let body = br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{"a":1}}},{"functionCall":{"name":"f","args":{}}}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"thoughtsTokenCount":2,"totalTokenCount":10}}"#;
        let r = chat_response(body).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let calls = c.message.tool_calls.as_ref().unwrap();
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(calls[0].function.arguments, "{\"a\":1}");
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (5, 5, 10));
        let safety = chat_response(br#"{"candidates":[{"finishReason":"SAFETY"}]}"#).unwrap();
        assert_eq!(safety.choices[0].finish_reason.as_deref(), Some("content_filter"));
    }

    #[test]
    fn errors_map_by_status_and_reason() {
        let e = error(400, br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#);
        assert_eq!((e.status, e.kind.as_str()), (401, "authentication_error"));
        let e = error(
            429,
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        let e = error(
            503,
            br#"[{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}]"#,
        );
        assert_eq!((e.status, e.message.as_str()), (503, "overloaded"));
    }
}
