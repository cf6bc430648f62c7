//! A guard in front of async-h1's request-head parser: it sees the head's bytes first.
//!
//! async-h1 reads a head line by line with no bound on one line (a head without a newline grows
//! in memory until the header timeout fires) and hands each header value to http-types, which
//! panics on a value that is UTF-8 but not ASCII (`Headers::append` unwraps). Neither can be
//! fixed in place (STACK-NOTES: frozen code), so the connection is read through [`HeadGuard`]:
//! until the blank line that ends the head it counts bytes and lines and rejects non-ASCII
//! bytes, failing the read with a [`Verdict`] the server answers. After the head it passes
//! bytes through untouched: the body may be anything.

use futures_lite::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

/// async-h1's own bounds (`MAX_HEAD_LENGTH`, `MAX_HEADERS`): the guard trips at the same
/// points, just before async-h1 would fail without saying why.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 128;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    TooLong,
    TooManyHeaders,
    NotAscii,
}

impl Verdict {
    pub fn status(self) -> u16 {
        match self {
            Verdict::TooLong | Verdict::TooManyHeaders => 431,
            Verdict::NotAscii => 400,
        }
    }

    pub fn message(self) -> String {
        match self {
            Verdict::TooLong => format!("request head exceeds {MAX_HEAD} bytes"),
            Verdict::TooManyHeaders => format!("request has more than {MAX_HEADERS} headers"),
            Verdict::NotAscii => {
                "request head holds a non-ASCII byte; header values must be ASCII (percent-encode ids)".to_owned()
            }
        }
    }
}

#[derive(Debug, Default)]
struct Scan {
    bytes: usize,
    lines: usize,
    /// The last four bytes, to spot the `\r\n\r\n` that ends the head.
    tail: u32,
    done: bool,
    verdict: Option<Verdict>,
}

impl Scan {
    fn feed(&mut self, buf: &[u8]) -> Result<(), Verdict> {
        for &b in buf {
            if self.done {
                break;
            }
            self.bytes += 1;
            self.tail = self.tail << 8 | u32::from(b);
            if b >= 0x80 {
                return Err(Verdict::NotAscii);
            }
            if b == b'\n' {
                self.lines += 1;
            }
            self.done = self.tail == u32::from_be_bytes(*b"\r\n\r\n");
            if !self.done && self.bytes >= MAX_HEAD {
                return Err(Verdict::TooLong);
            }
            // The request line plus the headers, each ended by a newline.
            if !self.done && self.lines > MAX_HEADERS + 1 {
                return Err(Verdict::TooManyHeaders);
            }
        }
        Ok(())
    }
}

/// The client connection as async-h1 reads one request from it. Clones share one scan.
#[derive(Debug, Clone)]
pub(super) struct HeadGuard {
    stream: TcpStream,
    scan: Arc<Mutex<Scan>>,
}

impl HeadGuard {
    pub fn new(stream: TcpStream) -> Self {
        HeadGuard {
            stream,
            scan: Arc::default(),
        }
    }

    /// Why the head was refused, if it was.
    pub fn verdict(&self) -> Option<Verdict> {
        self.lock().verdict
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scan> {
        // The scan holds plain counters: a panic elsewhere cannot leave them inconsistent.
        self.scan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let mut scan = self.lock();
        if let Err(v) = scan.feed(&buf[..n]) {
            scan.verdict = Some(v);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, v.message())));
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> Result<bool, Verdict> {
        let mut s = Scan::default();
        for c in chunks {
            s.feed(c)?;
        }
        Ok(s.done)
    }

    #[test]
    fn a_head_split_anywhere_ends_at_its_blank_line_and_the_body_is_not_scanned() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nhost: x\r", b"\n\r", b"\n\xff\xfe body"]),
            Ok(true)
        );
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\nhost: x\r\n"]), Ok(false));
    }

    #[test]
    fn long_heads_many_headers_and_non_ascii_bytes_are_refused() {
        let endless = vec![b'a'; MAX_HEAD];
        assert_eq!(scan(&[&endless]), Err(Verdict::TooLong));
        let many = "x: y\r\n".repeat(MAX_HEADERS + 1);
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\n", many.as_bytes()]),
            Err(Verdict::TooManyHeaders)
        );
        let fits = "x: y\r\n".repeat(MAX_HEADERS);
        assert_eq!(scan(&[b"GET / HTTP/1.1\r\n", fits.as_bytes(), b"\r\n"]), Ok(true));
        assert_eq!(scan(&["GET / HTTP/1.1\r\nx: é\r\n".as_bytes()]), Err(Verdict::NotAscii));
    }
}
