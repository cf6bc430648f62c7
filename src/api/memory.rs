//! `/v1/memory/…`: threads, messages and observations over HTTP, Mastra's paths and field
//! names, every call scoped to the caller's tenant (a thread of another tenant is a 404).

use super::{parse_body, Ctx};
use crate::clock;
use crate::error::ApiError;
use crate::http::json_response;
use crate::ir::Message;
use crate::memory::{self, lines, store_error};
use crate::store::{quota, threads, NewMessage, StoredMessage, ThreadRecord};
use http_types::{Method, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Default and largest page of a list.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Serves one memory API request; `path` is what follows `/v1/memory/`.
pub(super) async fn handle(
    ctx: &mut Ctx,
    method: Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segments: Vec<String> = path.split('/').map(percent_decode).collect::<Result<_, _>>()?;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    // A malformed id is the client's mistake (400), not a thread that does not exist (404).
    if let ["threads", id, ..] = parts.as_slice() {
        threads::check_id("thread id", id).map_err(ApiError::invalid)?;
    }
    let tenant = ctx.caller.tenant.clone();
    match (method, parts.as_slice()) {
        (Method::Get, ["threads"]) => list_threads(ctx, &tenant, query),
        (Method::Post, ["threads"]) => create_thread(ctx, &tenant, body).await,
        (Method::Get, ["threads", id]) => Ok(json_response(200, &thread_json(&visible(ctx, &tenant, id)?))),
        (Method::Patch, ["threads", id]) => update_thread(ctx, &tenant, id, body).await,
        (Method::Delete, ["threads", id]) => {
            let thread = memory::delete_thread(&ctx.app.memory, &tenant, id)
                .await
                .map_err(store_error)?;
            Ok(json_response(200, &json!({"id": thread.id, "deleted": true})))
        }
        (Method::Get, ["threads", id, "messages"]) => list_messages(ctx, &tenant, id, query),
        (Method::Post, ["threads", id, "messages"]) => save_messages(ctx, &tenant, id, body).await,
        (Method::Delete, ["threads", id, "messages"]) => delete_messages(ctx, &tenant, id, body).await,
        (Method::Get, ["threads", id, "observations"]) => observations(ctx, &tenant, id),
        (Method::Get, ["threads", id, "observations", "record"]) => record(ctx, &tenant, id),
        (Method::Get, ["threads", id, "observations", "history"]) => history(ctx, &tenant, id),
        (Method::Patch, ["threads", id, "observations", "config"]) => set_config(ctx, &tenant, id, body).await,
        (Method::Delete, ["resources", resource]) => {
            threads::check_id("resourceId", resource).map_err(ApiError::invalid)?;
            let gone = memory::erase_resource(&ctx.app.memory, &tenant, resource)
                .await
                .map_err(store_error)?;
            Ok(json_response(
                200,
                &json!({"resourceId": resource, "deleted": true, "threads": gone.len()}),
            ))
        }
        (m, _) if known(&parts) => Err(ApiError::method_not_allowed(m.as_ref(), &format!("/v1/memory/{path}"))),
        _ => Err(ApiError::not_found(format!(
            "no memory route /v1/memory/{path}; see the README for /v1/memory/threads and /v1/memory/resources"
        ))),
    }
}

/// Whether a path names a memory route under some method (for 405 versus 404).
fn known(parts: &[&str]) -> bool {
    matches!(
        parts,
        ["threads"]
            | ["threads", _]
            | ["threads", _, "messages"]
            | ["threads", _, "observations"]
            | ["threads", _, "observations", "record" | "history" | "config"]
            | ["resources", _]
    )
}

pub(super) fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or_else(|| ApiError::invalid(format!("bad percent-encoding in path segment {s:?}")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid("path segments must be UTF-8"))
}

/// Runs `op` on the writer with the caller's thread `id` (a 404 if the caller has none).
async fn on_thread<T: Send + 'static>(
    ctx: &Ctx,
    tenant: &str,
    id: &str,
    op: impl FnOnce(&redb::WriteTransaction, ThreadRecord) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let (id, tenant) = (id.to_owned(), tenant.to_owned());
    ctx.app
        .store
        .write(move |tx| op(tx, threads::owned(tx, &tenant, &id)?))
        .await
        .map_err(store_error)
}

/// The caller's thread `id`; a 404 if the caller has none (other tenants' ids are theirs).
fn visible(ctx: &Ctx, tenant: &str, id: &str) -> Result<ThreadRecord, ApiError> {
    ctx.app
        .store
        .read()
        .and_then(|r| r.thread(tenant, id))
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("thread {id:?} not found")))
}

fn thread_json(t: &ThreadRecord) -> Value {
    json!({
        "id": t.id,
        "resourceId": t.resource,
        "title": t.title,
        "metadata": t.metadata,
        "createdAt": clock::iso8601(t.created_at),
        "updatedAt": clock::iso8601(t.updated_at),
        "messageCount": t.message_count,
    })
}

fn message_json(thread: &str, m: &StoredMessage) -> Value {
    let mut v = json!({
        "id": m.id,
        "threadId": thread,
        "role": m.message.role,
        "content": m.message.content,
        "createdAt": clock::iso8601(m.created_at),
    });
    if let Some(calls) = &m.message.tool_calls {
        v["toolCalls"] = json!(calls);
    }
    if let Some(id) = &m.message.tool_call_id {
        v["toolCallId"] = json!(id);
    }
    if m.incomplete {
        v["incomplete"] = json!(true);
    }
    v
}

/// `limit` and `offset` from the query, checked.
fn paging(query: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    let number = |k: &str, default: usize| {
        query.get(k).map_or(Ok(default), |v| {
            v.parse::<usize>()
                .map_err(|_| ApiError::invalid_param(k, format!("{k} must be a non-negative integer, not {v:?}")))
        })
    };
    let limit = number("limit", PAGE)?;
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid_param("limit", format!("limit must be 1-{MAX_PAGE}")));
    }
    Ok((limit, number("offset", 0)?))
}

fn list_threads(ctx: &Ctx, tenant: &str, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let (limit, offset) = paging(query)?;
    let resource = query.get("resourceId").map(String::as_str);
    let all = ctx
        .app
        .store
        .read()
        .and_then(|r| r.threads(Some(tenant), resource))
        .map_err(store_error)?;
    let page: Vec<Value> = all.iter().skip(offset).take(limit).map(thread_json).collect();
    Ok(json_response(
        200,
        &json!({"threads": page, "total": all.len(), "hasMore": offset + page.len() < all.len()}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewThread {
    #[serde(default)]
    id: Option<String>,
    resource_id: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

async fn create_thread(ctx: &Ctx, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let new: NewThread = parse_body(body)?;
    quota::check_thread_fields(new.title.as_deref(), new.metadata.as_ref()).map_err(cap_error)?;
    let id = match new.id {
        Some(id) => id,
        None => format!("thread_{:x}", clock::now_ms()) + &random_suffix(),
    };
    threads::check_id("id", &id).map_err(|m| ApiError::invalid_param("id", m))?;
    threads::check_id("resourceId", &new.resource_id).map_err(|m| ApiError::invalid_param("resourceId", m))?;
    let mut record = ThreadRecord::new(&id, tenant, &new.resource_id, clock::now_ms());
    record.title = new.title;
    record.metadata = Value::Object(new.metadata.unwrap_or_default());
    let saved = record.clone();
    // The record (its title and metadata) counts against the quota like messages do, so a key
    // over it cannot fill the disk with threads.
    let (bytes, limit) = (quota::record_bytes(&record), ctx.app.store.quota());
    ctx.app
        .store
        .write(move |tx| {
            quota::charge(tx, &saved.tenant, &saved.id, bytes, limit)?;
            threads::create(tx, &saved)
        })
        .await
        .map_err(store_error)?;
    Ok(json_response(201, &thread_json(&record)))
}

/// A field over its storage cap: 400 naming the field.
pub(super) fn cap_error((field, message): quota::CapError) -> ApiError {
    ApiError::invalid_param(field, message)
}

fn random_suffix() -> String {
    let mut raw = [0u8; 4];
    let _ = getrandom::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreadPatch {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

async fn update_thread(ctx: &Ctx, tenant: &str, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let patch: ThreadPatch = parse_body(body)?;
    quota::check_thread_fields(patch.title.as_deref(), patch.metadata.as_ref()).map_err(cap_error)?;
    let limit = ctx.app.store.quota();
    let thread = on_thread(ctx, tenant, id, move |tx, mut t| {
        let before = quota::record_bytes(&t);
        if patch.title.is_some() {
            t.title = patch.title;
        }
        if let Some(m) = patch.metadata {
            t.metadata = Value::Object(m);
        }
        t.updated_at = clock::now_ms();
        // Growth is charged (and refused past the quota); a smaller record gives nothing back,
        // as deleting single messages does not.
        let grown = quota::record_bytes(&t).saturating_sub(before);
        quota::charge(tx, &t.tenant, &t.id, grown, limit)?;
        threads::update(tx, &t)?;
        Ok(t)
    })
    .await?;
    Ok(json_response(200, &thread_json(&thread)))
}

fn list_messages(ctx: &Ctx, tenant: &str, id: &str, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let (limit, offset) = paging(query)?;
    let desc = match query.get("order").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "order",
                format!("order must be asc or desc, not {other:?}"),
            ))
        }
    };
    let thread = visible(ctx, tenant, id)?;
    let page = ctx
        .app
        .store
        .read()
        .and_then(|r| r.message_page(&thread, offset, limit, desc))
        .map_err(store_error)?;
    let messages: Vec<Value> = page.iter().map(|m| message_json(&thread.id, m)).collect();
    Ok(json_response(
        200,
        &json!({"messages": messages, "total": thread.message_count, "hasMore": ((offset + messages.len()) as u64) < thread.message_count}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveMessages {
    messages: Vec<Message>,
}

async fn save_messages(ctx: &Ctx, tenant: &str, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let save: SaveMessages = parse_body(body)?;
    if save.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    if let Some(m) = save
        .messages
        .iter()
        .find(|m| !matches!(m.role.as_str(), "user" | "assistant" | "system" | "tool"))
    {
        return Err(ApiError::invalid_param(
            "messages",
            format!("role {:?} is not one of user, assistant, system, tool", m.role),
        ));
    }
    let new = save
        .messages
        .into_iter()
        .map(|mut m| {
            // `createdAt` dates imported history; it is the message's time, not part of it.
            let at = match m.rest.remove("createdAt") {
                None | Some(Value::Null) => None,
                Some(v) => Some(created_at(&v)?),
            };
            let mut new = memory::to_store(m, false);
            new.created_at = at;
            Ok(new)
        })
        .collect::<Result<Vec<NewMessage>, ApiError>>()?;
    let (bytes, limit) = (
        quota::message_bytes(new.iter().map(|m| &m.message)),
        ctx.app.store.quota(),
    );
    let (thread, stored) = on_thread(ctx, tenant, id, move |tx, mut t| {
        quota::charge(tx, &t.tenant, &t.id, bytes, limit)?;
        let stored = threads::append(tx, &mut t, new, clock::now_ms())?;
        Ok((t, stored))
    })
    .await?;
    memory::saved(&ctx.app.memory, &thread, &ctx.payer());
    let messages: Vec<Value> = stored.iter().map(|m| message_json(&thread.id, m)).collect();
    Ok(json_response(201, &json!({"messages": messages})))
}

/// A message's `createdAt`: an ISO 8601 UTC instant (Mastra's form), a `YYYY-MM-DD` date or
/// epoch milliseconds (JavaScript's `Date.now()`).
fn created_at(v: &Value) -> Result<u64, ApiError> {
    let ms = match v {
        Value::String(s) => clock::parse(s).filter(|_| s.parse::<u64>().is_err()),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    ms.ok_or_else(|| {
        ApiError::invalid_param(
            "messages",
            format!("createdAt {v} is not a date: use 2023-05-20T02:21:00Z, 2023-05-20 or epoch milliseconds"),
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeleteMessages {
    message_ids: Vec<String>,
}

async fn delete_messages(ctx: &Ctx, tenant: &str, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let del: DeleteMessages = parse_body(body)?;
    let deleted = memory::delete_messages(&ctx.app.memory, tenant, id, del.message_ids)
        .await
        .map_err(store_error)?;
    Ok(json_response(200, &json!({"deleted": deleted})))
}

fn observations(ctx: &Ctx, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let thread = visible(ctx, tenant, id)?;
    let record = ctx
        .app
        .store
        .read()
        .and_then(|r| r.observations(&ctx.app.memory.scope_key(&thread)))
        .map_err(store_error)?
        .unwrap_or_default();
    Ok(json_response(
        200,
        &json!({
            "threadId": thread.id,
            "resourceId": thread.resource,
            "scope": scope_name(ctx),
            "generation": record.generation,
            "observations": record.text,
            "lines": lines::lines(&record.text),
            "currentTask": record.current_task,
            "tokens": record.tokens,
            "updatedAt": (record.updated_at > 0).then(|| clock::iso8601(record.updated_at)),
        }),
    ))
}

fn scope_name(ctx: &Ctx) -> &'static str {
    match ctx.app.memory.settings.scope {
        crate::config::MemoryScope::Thread => "thread",
        crate::config::MemoryScope::Resource => "resource",
    }
}

fn record(ctx: &Ctx, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let thread = visible(ctx, tenant, id)?;
    let reader = ctx.app.store.read().map_err(store_error)?;
    let record = reader
        .observations(&ctx.app.memory.scope_key(&thread))
        .map_err(store_error)?
        .unwrap_or_default();
    let unobserved = reader.messages_from(&thread, thread.cursor).map_err(store_error)?;
    let (message_tokens, observation_tokens) = ctx.app.memory.thresholds(&thread);
    let (observing, reflecting) = ctx.app.memory.activity(&thread);
    let (chunks, buffered) = ctx.app.memory.buffered(&thread);
    Ok(json_response(
        200,
        &json!({
            "threadId": thread.id,
            "resourceId": thread.resource,
            "scope": scope_name(ctx),
            "generationCount": record.generation,
            "observationTokenCount": record.tokens,
            "pendingMessageTokens": memory::pending_tokens(&unobserved),
            "pendingMessages": unobserved.len(),
            "observedMessages": thread.message_count.saturating_sub(unobserved.len() as u64),
            "config": {"messageTokens": message_tokens, "observationTokens": observation_tokens},
            "isObserving": observing,
            "isReflecting": reflecting,
            "buffered": {"chunks": chunks, "messages": buffered},
            "lastObservedAt": record.last_observed_at.map(clock::iso8601),
            "observerRuns": record.observer_runs,
            "reflectorRuns": record.reflector_runs,
            "failures": record.failures,
            "refusedAnswers": record.refused,
            "memoryUsage": {
                "prompt_tokens": record.memory_prompt_tokens,
                "completion_tokens": record.memory_completion_tokens,
                "total_tokens": record.memory_prompt_tokens + record.memory_completion_tokens,
            },
        }),
    ))
}

fn history(ctx: &Ctx, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let thread = visible(ctx, tenant, id)?;
    let reader = ctx.app.store.read().map_err(store_error)?;
    let scope = ctx.app.memory.scope_key(&thread);
    let mut generations: Vec<Value> = reader
        .history(&scope)
        .map_err(store_error)?
        .iter()
        .map(|g| {
            json!({
                "generation": g.generation,
                "observations": g.text,
                "tokens": g.tokens,
                "createdAt": (g.created_at > 0).then(|| clock::iso8601(g.created_at)),
                "replacedAt": clock::iso8601(g.replaced_at),
            })
        })
        .collect();
    if let Some(current) = reader.observations(&scope).map_err(store_error)? {
        generations.push(json!({
            "generation": current.generation,
            "observations": current.text,
            "tokens": current.tokens,
            "createdAt": (current.created_at > 0).then(|| clock::iso8601(current.created_at)),
            "replacedAt": null,
        }));
    }
    Ok(json_response(
        200,
        &json!({"threadId": thread.id, "generations": generations}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Thresholds {
    #[serde(default)]
    message_tokens: Option<u64>,
    #[serde(default)]
    observation_tokens: Option<u64>,
}

async fn set_config(ctx: &Ctx, tenant: &str, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let patch: Thresholds = parse_body(body)?;
    for (name, v) in [
        ("messageTokens", patch.message_tokens),
        ("observationTokens", patch.observation_tokens),
    ] {
        if v == Some(0) {
            return Err(ApiError::invalid_param(name, format!("{name} must be at least 1")));
        }
    }
    let thread = on_thread(ctx, tenant, id, move |tx, mut t| {
        t.message_tokens = patch.message_tokens.or(t.message_tokens);
        t.observation_tokens = patch.observation_tokens.or(t.observation_tokens);
        threads::update(tx, &t)?;
        Ok(t)
    })
    .await?;
    let (message_tokens, observation_tokens) = ctx.app.memory.thresholds(&thread);
    Ok(json_response(
        200,
        &json!({"threadId": thread.id, "messageTokens": message_tokens, "observationTokens": observation_tokens}),
    ))
}
