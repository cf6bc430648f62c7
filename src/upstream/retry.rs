//! When to send a failed upstream request again, and how long to wait first.
//!
//! Retried: 429, 500, 502, 503, 504 and 529 from the upstream, and connections that failed
//! before an answer began. Not retried: our own first-byte timeout (the upstream may still be
//! working, and a second request would be paid twice), and anything once a stream has started
//! (callers only retry before they return a response). Waits grow exponentially with full
//! jitter, or follow the upstream's `Retry-After` (up to 10 s), and never run past the request's
//! total budget.

use crate::config::RetryConfig;
use std::time::{Duration, Instant};

/// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`].
const BASE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest `Retry-After` waited out; asked for longer (a quota reset), the client hears at
/// once and may fall back, rather than hanging on.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Whether an upstream status is worth trying again.
pub fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504 | 529)
}

/// `Retry-After` (delta-seconds; an HTTP date is treated as absent) or OpenAI's `retry-after-ms`.
pub fn after(ms: Option<&str>, seconds: Option<&str>) -> Option<Duration> {
    let ms = ms.and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v / 1000.0);
    let secs = seconds.and_then(|v| v.trim().parse::<f64>().ok());
    ms.or(secs)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
}

/// One request's retry budget: attempts and a deadline.
#[derive(Debug)]
pub struct Budget {
    attempts: u32,
    made: u32,
    deadline: Instant,
}

impl Budget {
    pub fn new(cfg: &RetryConfig) -> Budget {
        Budget {
            attempts: cfg.attempts(),
            made: 0,
            deadline: Instant::now() + cfg.total(),
        }
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
        assert!(retryable(529) && retryable(429) && !retryable(400) && !retryable(501));
    }
}
