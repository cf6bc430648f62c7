//! When to send a failed upstream request again, and how long to wait first.
//!
//! Retried: the statuses in `[retry] statuses` (429, 500, 502, 503, 504 and 529 by default)
//! from the upstream, except a 500 whose body says the request can never succeed
//! ([`permanent`]), and connections that failed before an answer began. Not retried: our own
//! first-byte timeout (the upstream may still be working, and a second request would be paid
//! twice), an answer that is not HTTP we accept (the upstream processed the request), and
//! anything once a stream has started (callers only retry before they return a response). Waits
//! grow exponentially with full jitter, or follow the upstream's `Retry-After` (up to 10 s), and
//! never run past the request's total budget.

use crate::config::RetryConfig;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`].
const BASE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited out; asked for longer (a quota reset), the client hears at
/// once and may fall back, rather than hanging on.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Whether a 500's body says that the request can never succeed, however often it is sent: a
/// server that lacks the capability asked for (llama.cpp's "does not support embeddings",
/// llama-cpp-python's "must be created with embedding=True", "not supported"), or one that
/// files a client error under 500 (`invalid_request_error`, `not_supported_error`). Read from
/// OpenAI's error shape only, so a bare 500 page is still retried.
pub fn permanent(status: u16, body: &[u8]) -> bool {
    if status != 500 {
        return false;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(error) = v.get("error") else {
        return false;
    };
    let text = |k: &str| {
        error
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let message = match error {
        Value::String(s) => s.to_ascii_lowercase(),
        _ => text("message"),
    };
    matches!(text("type").as_str(), "invalid_request_error" | "not_supported_error")
        || ["not support", "must be created with"]
            .iter()
            .any(|p| message.contains(p))
}

/// `Retry-After` (delta-seconds; an HTTP date is treated as absent) or OpenAI's `retry-after-ms`.
pub fn after(ms: Option<&str>, seconds: Option<&str>) -> Option<Duration> {
    let ms = ms.and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v / 1000.0);
    let secs = seconds.and_then(|v| v.trim().parse::<f64>().ok());
    ms.or(secs)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// One request's retry budget: attempts, a deadline, and which statuses are worth another try.
#[derive(Debug)]
pub struct Budget {
    attempts: u32,
    made: u32,
    deadline: Instant,
    statuses: Vec<u16>,
}

impl Budget {
    pub fn new(cfg: &RetryConfig) -> Budget {
        Budget {
            attempts: cfg.attempts(),
            made: 0,
            deadline: Instant::now() + cfg.total(),
            statuses: cfg.statuses().to_vec(),
        }
    }

    /// Whether an upstream's error answer is worth trying again.
    pub fn retries(&self, status: u16, body: &[u8]) -> bool {
        self.statuses.contains(&status) && !permanent(status, body)
    }

    /// Counts an attempt about to be made.
    pub fn start(&mut self) {
        self.made += 1;
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.made
    }

    /// How long to wait before the next attempt, or `None` when the budget is spent (attempts,
    /// or time: a wait that would end past the deadline is not worth starting).
    pub fn next_wait(&self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.made >= self.attempts {
            return None;
        }
        let wait = retry_after.unwrap_or_else(|| jitter(backoff(self.made)));
        (wait <= MAX_WAIT && Instant::now() + wait < self.deadline).then_some(wait)
    }
}

/// The ceiling of the wait after `made` attempts: 250 ms, 500 ms, 1 s, … up to 8 s.
fn backoff(made: u32) -> Duration {
    BASE.saturating_mul(1 << made.saturating_sub(1).min(8)).min(MAX_BACKOFF)
}

/// Full jitter: a uniform wait in `[0, ceiling]`, so clients that failed together spread out.
fn jitter(ceiling: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => u64::from(std::process::id()),
    };
    ceiling.mul_f64((r % 10_000) as f64 / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_are_capped_and_respect_the_budget() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(1000));
        assert_eq!(backoff(30), MAX_BACKOFF);
        let cfg = RetryConfig {
            max_attempts: Some(2),
            max_total_ms: Some(60_000),
            statuses: None,
        };
        let mut b = Budget::new(&cfg);
        b.start();
        assert!(b.next_wait(None).is_some_and(|w| w <= Duration::from_millis(250)));
        assert_eq!(b.next_wait(Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        // Asked to wait past the cap or the deadline: give up now rather than hang.
        assert_eq!(b.next_wait(Some(Duration::from_secs(17))), None);
        b.start();
        assert_eq!(b.next_wait(None), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_ms() {
        assert_eq!(after(None, Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(after(Some("1500"), Some("7")), Some(Duration::from_millis(1500)));
        assert_eq!(after(None, Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(after(None, Some("-3")), None);
    }

    #[test]
    fn statuses_are_configurable_and_permanent_500s_are_not_retried() {
        let b = Budget::new(&RetryConfig::default());
        assert!(b.retries(529, b"") && b.retries(429, b"") && !b.retries(400, b"") && !b.retries(501, b""));
        let llama_cpp_python = br#"{"error":{"message":"Llama model must be created with embedding=True to call this method","type":"internal_server_error","param":null,"code":null}}"#;
        let llama_cpp = br#"{"error":{"code":500,"message":"This server does not support embeddings. Start it with `--embeddings`","type":"server_error"}}"#;
        for body in [
            &llama_cpp_python[..],
            llama_cpp,
            br#"{"error":{"message":"x","type":"invalid_request_error"}}"#,
        ] {
            assert!(!b.retries(500, body), "{}", String::from_utf8_lossy(body));
            // Only a 500 is read so: a 503 saying so is still an overloaded server.
            assert!(b.retries(503, body));
        }
        for body in [
            &b"<html>500 Internal Server Error</html>"[..],
            br#"{"error":{"message":"CUDA error: out of memory","type":"server_error"}}"#,
            b"",
        ] {
            assert!(b.retries(500, body), "{}", String::from_utf8_lossy(body));
        }
        let only = Budget::new(&RetryConfig {
            statuses: Some(vec![503]),
            ..RetryConfig::default()
        });
        assert!(only.retries(503, b"") && !only.retries(500, b"") && !only.retries(429, b""));
    }
}
