use crate::error::ApiError;
use http_types::{Body, Response, StatusCode};
use serde::Serialize;

fn status(code: u16) -> StatusCode {
    StatusCode::try_from(code).unwrap_or(StatusCode::BadGateway)
}

/// A JSON response. The content type is set after the body, which would otherwise override it.
pub fn json_response(code: u16, value: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut res = Response::new(status(code));
    res.set_body(Body::from_bytes(bytes));
    res.insert_header("content-type", "application/json");
    res
}

/// An error in OpenAI's shape with its status.
pub fn error_response(err: &ApiError) -> Response {
    json_response(err.status, &err.body())
}

pub fn text_response(code: u16, content_type: &str, text: impl Into<Vec<u8>>) -> Response {
    let mut res = Response::new(status(code));
    res.set_body(Body::from_bytes(text.into()));
    res.insert_header("content-type", content_type);
    res
}

/// A `text/event-stream` response over a streaming body (chunked, never sized).
pub fn sse_response(body: Body) -> Response {
    let mut res = Response::new(StatusCode::Ok);
    res.set_body(body);
    res.insert_header("content-type", "text/event-stream; charset=utf-8");
    res.insert_header("cache-control", "no-cache");
    // Tells a reverse proxy in front of memgate (nginx) not to buffer the stream either.
    res.insert_header("x-accel-buffering", "no");
    res
}
