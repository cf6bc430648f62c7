use crate::error::ApiError;
use futures_lite::{future, AsyncReadExt};
use http_types::Request;
use smol::Timer;
use std::time::Duration;

/// Reads a request body of at most `limit` bytes within `timeout` (else 408: a slow body).
///
/// async-h1 imposes no body limit, so one extra byte is requested: getting it means the body is
/// over the limit and the client gets a 413 naming the setting, without the rest being read.
pub async fn read_body(req: &mut Request, limit: u64, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    if req.len().is_some_and(|n| n as u64 > limit) {
        return Err(ApiError::too_large(limit));
    }
    let hint = req.len().unwrap_or(0).min(limit as usize);
    let body = req.take_body();
    let mut buf = Vec::with_capacity(hint);
    let read = async {
        let r = body.take(limit + 1).read_to_end(&mut buf).await;
        Some(r)
    };
    let timed_out = async {
        Timer::after(timeout).await;
        None
    };
    match future::or(read, timed_out).await {
        None => Err(ApiError::new_status(
            408,
            &format!(
                "request body not received within {} ms (timeouts.body_ms)",
                timeout.as_millis()
            ),
        )),
        Some(Err(e)) => Err(ApiError::invalid(format!("could not read request body: {e}"))),
        Some(Ok(_)) if buf.len() as u64 > limit => Err(ApiError::too_large(limit)),
        Some(Ok(_)) => Ok(buf),
    }
}
