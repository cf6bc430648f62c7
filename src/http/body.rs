use crate::budget::{Budget, Hold};
use crate::error::ApiError;
use futures_lite::{future, AsyncReadExt};
use http_types::Request;
use smol::Timer;
use std::time::Duration;

/// Reads a request body of at most `limit` bytes within `timeout` (else 408: a slow body),
/// holding its size from `budget` (the hold goes with the body: keep it while the body lives).
///
/// async-h1 imposes no body limit, so one extra byte is requested: getting it means the body is
/// over the limit and the client gets a 413 naming the setting, without the rest being read.
pub async fn read_body(
    req: &mut Request,
    limit: u64,
    timeout: Duration,
    budget: &Budget,
) -> Result<(Vec<u8>, Hold), ApiError> {
    if req.len().is_some_and(|n| n as u64 > limit) {
        return Err(ApiError::too_large(limit));
    }
    let hint = req.len().unwrap_or(0).min(limit as usize);
    let mut hold = budget.hold();
    if !hold.resize(hint as u64) {
        return Err(over_budget(budget));
    }
    let mut body = req.take_body().take(limit + 1);
    let mut buf = Vec::with_capacity(hint);
    let read = async {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            match body.read(&mut chunk).await {
                Ok(0) => return Some(Ok(())),
                Ok(n) => {
                    if !hold.resize((buf.len() + n) as u64) {
                        return Some(Err(over_budget(budget)));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                Err(e) => return Some(Err(ApiError::invalid(format!("could not read request body: {e}")))),
            }
        }
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
        Some(Err(e)) => Err(e),
        Some(Ok(())) if buf.len() as u64 > limit => Err(ApiError::too_large(limit)),
        Some(Ok(())) => Ok((buf, hold)),
    }
}

/// The budget is spent: the body could be served a moment later, when others finished.
pub fn over_budget(budget: &Budget) -> ApiError {
    ApiError::new(
        503,
        "server_error",
        Some("overloaded"),
        format!(
            "memgate holds {} bytes of request and answer bodies already ([limits] max_buffered_bytes); retry shortly",
            budget.total()
        ),
    )
}
