//! One process-wide budget for the bytes memgate buffers on behalf of outside input.
//!
//! Each large buffer is bounded on its own (`max_body_bytes`, `max_upstream_body_bytes`,
//! `max_sse_event_bytes`), but many requests at once could still hold many such buffers: 1,024
//! requests in flight with 32 MiB bodies is 32 GiB, far past the unit's `MemoryMax`. So every
//! such buffer also holds its size from this budget (`[limits] max_buffered_bytes`), and a
//! request that would pass it is refused with a 503 instead of growing the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The budget; cheap to clone, shared by every buffer it bounds.
#[derive(Debug, Clone)]
pub struct Budget {
    left: Arc<AtomicU64>,
    total: u64,
}

/// Bytes held from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Hold {
    budget: Budget,
    held: u64,
}

impl Budget {
    pub fn new(total: u64) -> Budget {
        Budget {
            left: Arc::new(AtomicU64::new(total)),
            total,
        }
    }

    /// The configured size, for messages.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// An empty hold, to grow as its buffer grows.
    pub fn hold(&self) -> Hold {
        Hold {
            budget: self.clone(),
            held: 0,
        }
    }
}

impl Hold {
    /// Makes this hold `bytes` in all; `false` (and nothing changed) when the budget lacks the
    /// difference.
    pub fn resize(&mut self, bytes: u64) -> bool {
        if bytes <= self.held {
            self.budget.left.fetch_add(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
            return true;
        }
        let more = bytes - self.held;
        let took = self
            .budget
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(more));
        if took.is_ok() {
            self.held = bytes;
        }
        took.is_ok()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.held, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_take_what_is_left_and_give_it_back() {
        let b = Budget::new(100);
        let mut one = b.hold();
        let mut two = b.hold();
        assert!(one.resize(60));
        assert!(!two.resize(50), "only 40 left");
        assert!(two.resize(40));
        assert!(!one.resize(61));
        assert!(one.resize(10));
        assert!(two.resize(90));
        drop(two);
        drop(one);
        assert!(b.hold().resize(100));
    }
}
