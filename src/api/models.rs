//! `GET /v1/models` and `GET /v1/models/{id}`: what each provider serves, prefixed with its
//! name. Configured `models` are listed as they are; an OpenAI-compatible provider with
//! `models = "auto"` or none configured lists what its upstream reports (cached; see
//! `providers::listing`). A provider that cannot be listed right now lists nothing: the rest of
//! the list is still answered.

use super::memory::percent_decode;
use super::Ctx;
use crate::error::ApiError;
use crate::http::json_response;
use crate::providers::Provider;
use http_types::Response;
use serde_json::{json, Value};
use std::sync::Arc;

fn model(id: &str, created: u64, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": owner})
}

pub(super) async fn list(ctx: &Ctx) -> Response {
    let providers: Vec<Arc<Provider>> = ctx.app.router().providers().cloned().collect();
    // Asked side by side: one slow upstream costs the listing its own bounded wait only.
    let asks: Vec<_> = providers
        .iter()
        .map(|p| {
            let (p, client) = (p.clone(), ctx.app.client.clone());
            crate::runtime::spawn(async move { p.served_models(&client).await })
        })
        .collect();
    let mut data = Vec::new();
    for (p, ask) in providers.iter().zip(asks) {
        for m in ask.await.unwrap_or_default() {
            data.push(model(&format!("{}/{}", p.name, m.id), m.created, &p.name));
        }
    }
    json_response(200, &json!({"object": "list", "data": data}))
}

pub(super) async fn get(ctx: &Ctx, raw: &str) -> Result<Response, ApiError> {
    let id = percent_decode(raw)?;
    let unknown = || {
        let mut e = ApiError::new(
            404,
            "invalid_request_error",
            Some("model_not_found"),
            format!("The model '{id}' does not exist; GET /v1/models lists the models served"),
        );
        e.param = Some("model".to_owned());
        e
    };
    let route = ctx.app.router().resolve(&id).map_err(|_| unknown())?;
    let p = &route.provider;
    // The name after the provider's prefix, as the client wrote it (an alias, say).
    let named = id
        .strip_prefix(p.name.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(&id);
    // A provider whose models cannot be told (none configured for a kind memgate does not ask,
    // or an upstream that does not answer) is given the benefit of the doubt.
    let created = match p.served_models(&ctx.app.client).await {
        Some(list) => {
            let m = list.iter().find(|m| m.id == named || m.id == route.model);
            m.ok_or_else(unknown)?.created
        }
        None => 0,
    };
    Ok(json_response(200, &model(&id, created, &p.name)))
}
