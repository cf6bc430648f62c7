//! `GET /v1/usage`: the caller's requests and tokens, grouped (see `crate::usage`).

use super::Ctx;
use crate::error::ApiError;
use crate::http::json_response;
use crate::memory::store_error;
use crate::usage::{to_json, Query};
use http_types::Response;
use std::collections::HashMap;

pub(super) async fn get(ctx: &Ctx, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let param = |k: &str| query.get(k).map(String::as_str);
    let q = Query::parse(
        param("from"),
        param("to"),
        param("group_by"),
        Some(ctx.caller.tenant.clone()),
    )
    .map_err(ApiError::invalid)?;
    // What gathered in the last seconds is part of the answer.
    ctx.app.usage.flush(&ctx.app.store).await.map_err(store_error)?;
    let rows = q
        .run(&ctx.app.store.read().map_err(store_error)?)
        .map_err(store_error)?;
    Ok(json_response(200, &to_json(&rows)))
}
