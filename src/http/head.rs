//! A guard in front of async-h1's request-head parser: it sees the head's bytes first.
//!
//! async-h1 reads a head line by line with no bound on one line (a head without a newline grows
//! in memory until the header timeout fires) and hands each header value to http-types, which
//! panics on a value that is UTF-8 but not ASCII (`Headers::append` unwraps). Neither can be
//! fixed in place (STACK-NOTES: frozen code), so the connection is read through [`HeadGuard`]:
//! until the blank line that ends the head it counts bytes and lines and rejects non-ASCII
//! bytes, failing the read with a [`Verdict`] the server answers. At the blank line it checks
//! the head's framing, which async-h1 reads loosely (see [`framing`]). After the head it passes
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
    /// Content-Length headers that disagree, or one that is not a number.
    ContentLength,
    /// Transfer-Encoding that does not end the body with `chunked` alone, or comes with a
    /// Content-Length.
    TransferEncoding,
    /// A coding before `chunked` (gzip…) that memgate does not decode.
    UnsupportedCoding,
    /// No single `host[:port]` in Host.
    Host,
}

impl Verdict {
    pub fn status(self) -> u16 {
        match self {
            Verdict::TooLong | Verdict::TooManyHeaders => 431,
            Verdict::UnsupportedCoding => 501,
            Verdict::NotAscii | Verdict::ContentLength | Verdict::TransferEncoding | Verdict::Host => 400,
        }
    }

    pub fn message(self) -> String {
        match self {
            Verdict::TooLong => format!("request head exceeds {MAX_HEAD} bytes"),
            Verdict::TooManyHeaders => format!("request has more than {MAX_HEADERS} headers"),
            Verdict::NotAscii => {
                "request head holds a non-ASCII byte; header values must be ASCII (percent-encode ids)".to_owned()
            }
            Verdict::ContentLength => {
                "Content-Length must be one number, and repeated Content-Length headers must agree".to_owned()
            }
            Verdict::TransferEncoding => "Transfer-Encoding must be `chunked`, once, without Content-Length".to_owned(),
            Verdict::UnsupportedCoding => {
                "Transfer-Encoding other than `chunked` (gzip, …) is not supported; send the body chunked or with Content-Length".to_owned()
            }
            Verdict::Host => "the request needs one Host header holding host[:port]: a name, an IPv4 address or a \
                              bracketed IPv6 address, with no '/', '?', '#', '@' or '\\'"
                .to_owned(),
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
    /// The head so far (at most [`MAX_HEAD`] bytes), for the framing checks at its end.
    head: Vec<u8>,
}

impl Scan {
    fn feed(&mut self, buf: &[u8]) -> Result<(), Verdict> {
        for &b in buf {
            if self.done {
                break;
            }
            self.bytes += 1;
            self.head.push(b);
            self.tail = self.tail << 8 | u32::from(b);
            if b >= 0x80 {
                return Err(Verdict::NotAscii);
            }
            if b == b'\n' {
                self.lines += 1;
            }
            self.done = self.tail == u32::from_be_bytes(*b"\r\n\r\n");
            if self.done {
                return framing(&std::mem::take(&mut self.head));
            }
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

/// Refuses a head whose framing or target a front proxy could read differently from async-h1.
///
/// async-h1 takes the last of several Content-Length headers, reads a body only for a
/// Transfer-Encoding of exactly `chunked` (any other leaves the body on the wire, to be parsed as
/// the next request), and builds the URL as `http://{host}{path}`, so a Host holding `/`, `?`,
/// `#`, `@` or `\` changes the path that is routed. Each is a request-smuggling or routing
/// primitive behind a proxy that reads the head another way. The head is parsed with httparse,
/// as async-h1 parses it; one it cannot parse is left to async-h1's own error.
fn framing(head: &[u8]) -> Result<(), Verdict> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return Ok(());
    }
    let values = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("\u{fffd}").trim())
            .collect::<Vec<_>>()
    };
    let hosts = values("host");
    if hosts.len() > 1 || hosts.first().is_some_and(|h| !valid_host(h)) {
        return Err(Verdict::Host);
    }
    let lengths = values("content-length");
    let numbers: Vec<Option<u64>> = lengths
        .iter()
        .map(|v| v.bytes().all(|b| b.is_ascii_digit()).then(|| v.parse().ok()).flatten())
        .collect();
    if numbers.iter().any(Option::is_none) || numbers.windows(2).any(|w| w[0] != w[1]) {
        return Err(Verdict::ContentLength);
    }
    let codings = values("transfer-encoding");
    // The one form async-h1 decodes, exactly as it tests for it.
    if codings.is_empty() || (codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked") && lengths.is_empty()) {
        return Ok(());
    }
    let list = codings.join(",");
    let tokens: Vec<&str> = list.split(',').map(str::trim).collect();
    let token = |t: &&str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let chunked = |t: &&str| t.eq_ignore_ascii_case("chunked");
    let well_formed = lengths.is_empty()
        && tokens.iter().all(token)
        && tokens.last().is_some_and(chunked)
        && tokens.iter().filter(|t| chunked(t)).count() == 1;
    // Chunked last (so the body's end is known) after a coding we cannot undo: 501, as RFC 9112
    // §6.1 asks. Anything else leaves the body's length unknown: 400 and close (§6.3).
    Err(if well_formed {
        Verdict::UnsupportedCoding
    } else {
        Verdict::TransferEncoding
    })
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_host(v: &str) -> bool {
    let (host, port) = match v.rfind(':') {
        Some(i) if !v[i..].contains(']') => (&v[..i], Some(&v[i + 1..])),
        _ => (v, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)),
    };
    port_ok && host_ok
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

    #[test]
    fn framing_that_a_proxy_could_read_another_way_is_refused() {
        let head = |h: &str| framing(format!("POST / HTTP/1.1\r\n{h}\r\n").as_bytes());
        assert_eq!(head("host: x\r\ncontent-length: 5\r\ncontent-length: 05\r\n"), Ok(()));
        assert_eq!(
            head("host: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n"),
            Err(Verdict::ContentLength)
        );
        assert_eq!(head("host: x\r\ncontent-length: 5, 5\r\n"), Err(Verdict::ContentLength));
        assert_eq!(head("host: x\r\ntransfer-encoding: CHUNKED\r\n"), Ok(()));
        assert_eq!(
            head("host: x\r\ntransfer-encoding: br, chunked\r\n"),
            Err(Verdict::UnsupportedCoding)
        );
        assert_eq!(
            head("host: x\r\ntransfer-encoding: chunked,\r\n"),
            Err(Verdict::TransferEncoding)
        );
        assert_eq!(head("host: x:4000\r\n"), Ok(()));
        assert_eq!(head("host: [::1]:4000\r\n"), Ok(()));
        for bad in ["x:", "x:123456", "[::1", "[x]", "x/", "[::1]/x", "a@b", "x%2f"] {
            assert_eq!(head(&format!("host: {bad}\r\n")), Err(Verdict::Host), "{bad}");
        }
    }
}
