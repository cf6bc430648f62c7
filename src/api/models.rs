//! `GET /v1/models` and `GET /v1/models/{id}`: the models listed in the config, prefixed.

use super::Ctx;
use crate::error::ApiError;
use crate::http::json_response;
use http_types::Response;
use serde_json::{json, Value};

fn model(id: &str, owner: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
}

pub(super) fn list(ctx: &Ctx) -> Response {
    let data: Vec<Value> = ctx
        .app
        .router()
        .models()
        .iter()
        .map(|(id, owner)| model(id, owner))
        .collect();
    json_response(200, &json!({"object": "list", "data": data}))
}

pub(super) fn get(ctx: &Ctx, id: &str) -> Result<Response, ApiError> {
    let route = ctx.app.router().resolve(id)?;
    Ok(json_response(200, &model(id, &route.provider.name)))
}
