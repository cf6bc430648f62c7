//! Per-key rate limits: requests per minute and tokens per minute, as token buckets.
//!
//! Each key has two buckets that refill continuously (a minute's allowance per minute) and hold
//! at most one minute's worth, so a quiet key may burst up to its limit. A request takes one
//! from the request bucket up front; its tokens are taken from the token bucket when the answer
//! is counted, which may drive it below zero: the key then waits until the debt is repaid.
//! Limits live in memory: a restart forgives everything, which errs on the side of serving.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A key's limits (`None`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    last: Instant,
}

impl Bucket {
    fn full(per_minute: u64, now: Instant) -> Bucket {
        Bucket {
            level: per_minute as f64,
            last: now,
        }
    }

    /// Adds what accrued since the last look, up to a minute's worth.
    fn refill(&mut self, per_minute: u64, now: Instant) {
        let rate = per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(per_minute as f64);
        self.last = now;
    }

    /// Seconds until the level reaches `want`.
    fn wait_for(&self, want: f64, per_minute: u64) -> f64 {
        ((want - self.level) / (per_minute as f64 / 60.0)).max(0.0)
    }
}

#[derive(Debug, Default)]
struct Buckets {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

/// All keys' buckets.
#[derive(Debug, Default)]
pub struct Limiter {
    keys: Mutex<HashMap<String, Buckets>>,
}

/// Response headers telling the client where it stands.
pub type Headers = Vec<(&'static str, String)>;

impl Limiter {
    /// Admits one request of `key` or refuses it (the 429 to answer); either way, the
    /// rate-limit headers to send.
    pub fn admit(&self, key: &str, limits: Limits) -> (Headers, Option<ApiError>) {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let b = keys.entry(key.to_owned()).or_default();
        let mut wait = 0.0f64;
        let mut why = String::new();
        if let Some(rpm) = limits.rpm {
            let r = b.requests.get_or_insert_with(|| Bucket::full(rpm, now));
            r.refill(rpm, now);
            if r.level < 1.0 {
                wait = r.wait_for(1.0, rpm);
                why = format!("{rpm} requests per minute");
            }
        }
        if let Some(tpm) = limits.tpm {
            let t = b.tokens.get_or_insert_with(|| Bucket::full(tpm, now));
            t.refill(tpm, now);
            if t.level <= 0.0 && why.is_empty() {
                wait = t.wait_for(1.0, tpm);
                why = format!("{tpm} tokens per minute");
            }
        }
        if why.is_empty() {
            if let Some(r) = b.requests.as_mut() {
                r.level -= 1.0;
            }
        }
        let mut headers = headers(b, limits);
        if why.is_empty() {
            return (headers, None);
        }
        let secs = wait.ceil().max(1.0) as u64;
        let e = ApiError::new(
            429,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            format!("this key is over its limit of {why}; retry in {secs} s"),
        );
        headers.push(("retry-after", secs.to_string()));
        (headers, Some(e))
    }

    /// Takes an answer's tokens from `key`'s token bucket.
    pub fn charge(&self, key: &str, limits: Limits, tokens: u64) {
        let (Some(tpm), true) = (limits.tpm, tokens > 0) else {
            return;
        };
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let t = keys
            .entry(key.to_owned())
            .or_default()
            .tokens
            .get_or_insert_with(|| Bucket::full(tpm, now));
        t.refill(tpm, now);
        t.level -= tokens as f64;
    }
}

/// `X-RateLimit-Limit/Remaining/Reset` for requests (Reset: seconds until the bucket is full),
/// and the same with `-Tokens` when a token limit applies.
fn headers(b: &Buckets, limits: Limits) -> Headers {
    let mut h = Headers::new();
    if let (Some(rpm), Some(r)) = (limits.rpm, &b.requests) {
        h.push(("x-ratelimit-limit", rpm.to_string()));
        h.push(("x-ratelimit-remaining", (r.level.max(0.0).floor() as u64).to_string()));
        h.push((
            "x-ratelimit-reset",
            (r.wait_for(rpm as f64, rpm).ceil() as u64).to_string(),
        ));
    }
    if let (Some(tpm), Some(t)) = (limits.tpm, &b.tokens) {
        h.push(("x-ratelimit-limit-tokens", tpm.to_string()));
        h.push((
            "x-ratelimit-remaining-tokens",
            (t.level.max(0.0).floor() as u64).to_string(),
        ));
        h.push((
            "x-ratelimit-reset-tokens",
            (t.wait_for(tpm as f64, tpm).ceil() as u64).to_string(),
        ));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn retry_after(headers: &Headers) -> Option<Duration> {
        headers
            .iter()
            .find(|(k, _)| *k == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
            .map(Duration::from_secs)
    }

    #[test]
    fn a_key_bursts_to_its_limit_then_waits() {
        let l = Limiter::default();
        let limits = Limits {
            rpm: Some(3),
            tpm: None,
        };
        for left in ["2", "1", "0"] {
            let (h, refused) = l.admit("k", limits);
            assert!(refused.is_none());
            assert!(h.contains(&("x-ratelimit-remaining", left.to_owned())), "{h:?}");
        }
        let (h, e) = l.admit("k", limits);
        let e = e.unwrap();
        assert_eq!((e.status, e.kind.as_str()), (429, "rate_limit_error"));
        // One request per 20 s refills.
        assert!(
            retry_after(&h).is_some_and(|d| d.as_secs() >= 19 && d.as_secs() <= 20),
            "{h:?}"
        );
        assert!(l.admit("other", limits).1.is_none(), "keys are apart");
    }

    #[test]
    fn tokens_owed_block_the_next_request() {
        let l = Limiter::default();
        let limits = Limits {
            rpm: None,
            tpm: Some(1000),
        };
        assert!(l.admit("k", limits).1.is_none());
        l.charge("k", limits, 1500);
        let (h, e) = l.admit("k", limits);
        let e = e.unwrap();
        assert!(e.message.contains("1000 tokens per minute"), "{}", e.message);
        // 500 owed + 1 at 1000/min: about 30 s.
        assert!(
            retry_after(&h).is_some_and(|d| (30..=31).contains(&d.as_secs())),
            "{h:?}"
        );
    }
}
