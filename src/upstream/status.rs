//! Status codes http-types has no name for, read anyway.
//!
//! async-h1 refuses a response whose status http-types cannot represent, and some that
//! providers really send are among them: Anthropic's 529 (overloaded), Cloudflare's 52x. This
//! reader rewrites such a code in the status line to the generic code of its class (200, 300,
//! 400 or 500)
//! before async-h1 parses it, and keeps the real one for the caller.

use futures_lite::AsyncRead;
use http_types::StatusCode;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// `HTTP/1.1 ` then three digits.
const CODE_END: usize = 12;

pub struct StatusFix<R> {
    inner: R,
    /// The head's first bytes, held until the code is checked; `None` once passed on.
    head: Option<Vec<u8>>,
    sent: usize,
    /// The real status when it was rewritten, else 0.
    pub original: Arc<AtomicU16>,
}

impl<R> StatusFix<R> {
    pub fn new(inner: R) -> Self {
        StatusFix {
            inner,
            head: Some(Vec::with_capacity(CODE_END)),
            sent: 0,
            original: Arc::new(AtomicU16::new(0)),
        }
    }
}

fn fix(head: &mut [u8], original: &AtomicU16) {
    let Some(digits) = head.get(9..CODE_END) else { return };
    let Some(code) = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u16>().ok()) else {
        return;
    };
    if StatusCode::try_from(code).is_ok() {
        return;
    }
    original.store(code, Ordering::Relaxed);
    let generic: &[u8] = match code {
        200..=299 => b"200",
        300..=399 => b"300",
        400..=499 => b"400",
        _ => b"500",
    };
    head[9..CODE_END].copy_from_slice(generic);
}

impl<R: AsyncRead + Unpin> AsyncRead for StatusFix<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(head) = &mut this.head else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        // Gather the status line's first 12 bytes (or all there is) before letting any through.
        while head.len() < CODE_END {
            let mut byte = [0u8; CODE_END];
            let want = CODE_END - head.len();
            match Pin::new(&mut this.inner).poll_read(cx, &mut byte[..want]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => head.extend_from_slice(&byte[..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.sent == 0 {
            fix(head, &this.original);
        }
        let n = (head.len() - this.sent).min(buf.len());
        buf[..n].copy_from_slice(&head[this.sent..this.sent + n]);
        this.sent += n;
        if this.sent == head.len() {
            this.head = None;
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    fn read_all(input: &[u8]) -> (Vec<u8>, u16) {
        let mut r = StatusFix::new(futures_lite::io::Cursor::new(input.to_vec()));
        let mut out = Vec::new();
        futures_lite::future::block_on(r.read_to_end(&mut out)).unwrap();
        (out, r.original.load(Ordering::Relaxed))
    }

    #[test]
    fn unknown_codes_become_their_class_and_are_kept() {
        let (out, orig) = read_all(b"HTTP/1.1 529 Overloaded\r\n\r\n");
        assert_eq!((&out[..12], orig), (&b"HTTP/1.1 500"[..], 529));
        let (out, orig) = read_all(b"HTTP/1.1 429 Too Many\r\n\r\n");
        assert_eq!((&out[..], orig), (&b"HTTP/1.1 429 Too Many\r\n\r\n"[..], 0));
        assert_eq!(read_all(b"HTTP/1.1 4").0, b"HTTP/1.1 4");
        assert_eq!(read_all(b"").0, b"");
    }
}
