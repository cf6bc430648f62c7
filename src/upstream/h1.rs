//! Upstream response decoding: the head and the body framing, written here rather than taken
//! from async-h1's client.
//!
//! Everything an upstream sends is hostile input. async-h1's client decoder stores header
//! values through http-types, which panics on a non-ASCII byte (and with `panic = "abort"` one
//! header from a third-party service would end the process); its chunked decoder does the same
//! with trailers, can return `Pending` without a waker, reads a close-framed body as empty and
//! refuses status codes http-types has no name for. This decoder bounds the head (64 KiB, 128
//! fields), keeps any final status from 200 to 599 (named or not), skips 1xx interim answers,
//! drops header values that are not visible ASCII, and frames the body by `Transfer-Encoding:
//! chunked` (our own incremental decoder with bounded size lines and trailers, which are read
//! and discarded), `Content-Length`, or the connection's close. Body reads return as soon as
//! bytes arrive.

use futures_lite::{future::poll_fn, AsyncRead};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// The largest response head read; past it the answer is refused.
const MAX_HEAD: usize = 64 << 10;
/// The most header fields in one head.
const MAX_HEADERS: usize = 128;
/// Interim (1xx) heads skipped before the final one; more is an upstream stuck in a loop.
const MAX_INTERIM: usize = 16;
/// A chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 << 10;
/// All trailer fields of a chunked body together.
const MAX_TRAILERS: usize = 16 << 10;
/// How much is read from the socket at once into the framing buffer.
const READ_SIZE: usize = 8 << 10;

/// A response head, its fields filtered.
#[derive(Debug)]
pub(super) struct Head {
    pub status: u16,
    /// Names lowercased; values visible ASCII (with spaces and tabs), trimmed.
    headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The connection may carry another request once this body is read to its end.
    pub reusable: bool,
}

impl Head {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every value of a header, comma-separated lists split.
    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    /// The body runs until the upstream closes the connection.
    Close,
}

/// Why no usable head arrived.
#[derive(Debug)]
pub(super) enum HeadError {
    /// The connection failed or closed before a byte of an answer: nothing was processed,
    /// so the request may be sent again.
    Lost(String),
    /// The upstream answered, but not in HTTP/1.1 we accept.
    Malformed(String),
}

/// Bytes read from the socket and not yet used.
#[derive(Debug, Default)]
pub(super) struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Reads once more from `io` onto the end; `Ok(0)` at EOF.
    fn poll_fill<R: AsyncRead + Unpin>(&mut self, io: &mut R, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
        let len = self.data.len();
        self.data.resize(len + READ_SIZE, 0);
        let r = Pin::new(io).poll_read(cx, &mut self.data[len..]);
        let n = match &r {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.data.truncate(len + n);
        r
    }
}

/// Reads one final response head from `io`, skipping interim 1xx heads. Bytes read past the
/// head stay in `buf` for the body.
pub(super) async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buf,
    origin: &str,
) -> Result<Head, HeadError> {
    let mut interim = 0;
    let mut answered = false;
    loop {
        if !buf.unread().is_empty() {
            answered = true;
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut fields);
            match res.parse(buf.unread()) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = res.code.unwrap_or_default();
                    if !(100..=599).contains(&status) {
                        return Err(HeadError::Malformed(format!("sent status {status}, outside 100-599")));
                    }
                    let head = (!(100..200).contains(&status))
                        .then(|| head(status, res.version, res.headers, origin))
                        .transpose()
                        .map_err(HeadError::Malformed)?;
                    buf.consume(n);
                    match head {
                        Some(head) => return Ok(head),
                        // 101 would switch protocols, which memgate never asks for.
                        None if status == 101 => {
                            return Err(HeadError::Malformed("switched protocols unasked (101)".into()))
                        }
                        None => {
                            interim += 1;
                            if interim > MAX_INTERIM {
                                return Err(HeadError::Malformed(format!(
                                    "sent more than {MAX_INTERIM} interim (1xx) answers"
                                )));
                            }
                            continue;
                        }
                    }
                }
                Ok(httparse::Status::Partial) if buf.unread().len() > MAX_HEAD => {
                    return Err(HeadError::Malformed(format!(
                        "sent a response head over {} KiB",
                        MAX_HEAD >> 10
                    )))
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Malformed(format!(
                        "sent a response head with over {MAX_HEADERS} fields"
                    )))
                }
                Err(e) => return Err(HeadError::Malformed(format!("sent a malformed response head ({e})"))),
            }
        }
        match poll_fn(|cx| buf.poll_fill(io, cx)).await {
            Ok(0) if answered => return Err(HeadError::Malformed("closed the connection mid-head".into())),
            Ok(0) => return Err(HeadError::Lost("closed the connection without answering".into())),
            Ok(_) => {}
            Err(e) if answered => return Err(HeadError::Malformed(format!("broke off mid-head: {e}"))),
            Err(e) => return Err(HeadError::Lost(e.to_string())),
        }
    }
}

/// Visible ASCII, spaces and tabs: what memgate accepts in a header value, either way.
pub(super) fn is_field_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

fn head(status: u16, version: Option<u8>, fields: &[httparse::Header<'_>], origin: &str) -> Result<Head, String> {
    let mut headers = Vec::with_capacity(fields.len());
    for f in fields {
        if is_field_value(f.value) {
            // Checked: visible ASCII is UTF-8.
            let value = String::from_utf8_lossy(f.value).trim().to_owned();
            headers.push((f.name.to_ascii_lowercase(), value));
        } else {
            // Never the value: it may be a secret the upstream echoed.
            log::debug!("{origin}: dropped response header {:?}: not visible ASCII", f.name);
        }
    }
    let mut head = Head {
        status,
        headers,
        framing: Framing::Close,
        reusable: false,
    };
    let chunked = head
        .tokens("transfer-encoding")
        .last()
        .map(|t| t.eq_ignore_ascii_case("chunked"));
    let has_length = head.header("content-length").is_some();
    head.framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match chunked {
            Some(true) => Framing::Chunked,
            // A transfer coding not ending in chunked: the close ends the body (RFC 9112 6.3).
            Some(false) => Framing::Close,
            None if has_length => Framing::Length(content_length(&head)?),
            None => Framing::Close,
        }
    };
    let closing = head.tokens("connection").any(|t| t.eq_ignore_ascii_case("close"));
    // Length and chunked together smell of smuggling: chunked framed this body, but the
    // connection is not trusted with another request.
    let ambiguous = chunked.is_some() && has_length;
    head.reusable = version == Some(1) && !closing && !ambiguous && head.framing != Framing::Close;
    Ok(head)
}

/// One length from every `Content-Length` value; differing or invalid values are refused.
fn content_length(head: &Head) -> Result<u64, String> {
    let mut length = None;
    for t in head.tokens("content-length") {
        let n = (t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| format!("sent an invalid Content-Length {t:?}"))?;
        if length.is_some_and(|l| l != n) {
            return Err("sent differing Content-Length values".into());
        }
        length = Some(n);
    }
    length.ok_or_else(|| "sent an empty Content-Length".into())
}

/// Where the body's framing stands.
#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    Close,
    /// Expecting a chunk-size line.
    Size,
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// Reading trailer lines; how many bytes so far.
    Trailers(usize),
    Done,
}

/// A response body, decoded as it is read.
#[derive(Debug)]
pub(super) struct Body<R> {
    io: R,
    buf: Buf,
    state: State,
}

impl<R: AsyncRead + Unpin> Body<R> {
    pub fn new(io: R, buf: Buf, framing: Framing) -> Body<R> {
        let state = match framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
            Framing::Close => State::Close,
        };
        Body { io, buf, state }
    }

    /// Read to its framed end with nothing left over: the connection can carry a request.
    pub fn ended_clean(&self) -> bool {
        matches!(self.state, State::Done) && self.buf.unread().is_empty()
    }

    /// Body bytes straight to `out`, at most `limit`: buffered ones first, else one socket read.
    fn poll_some(&mut self, cx: &mut Context<'_>, out: &mut [u8], limit: u64) -> Poll<io::Result<usize>> {
        let want = out.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
        let unread = self.buf.unread();
        if !unread.is_empty() {
            let n = want.min(unread.len());
            out[..n].copy_from_slice(&unread[..n]);
            self.buf.consume(n);
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.io).poll_read(cx, &mut out[..want])
    }

    /// One framing line of at most `max` bytes: its length without the line end, and the
    /// bytes to consume with it; `too_long` is the error past `max`. A bare LF ends a line
    /// too (RFC 9112 2.2).
    fn poll_line(&mut self, cx: &mut Context<'_>, max: usize, too_long: &str) -> Poll<io::Result<(usize, usize)>> {
        loop {
            let unread = self.buf.unread();
            if let Some(i) = unread.iter().position(|&b| b == b'\n') {
                let len = if i > 0 && unread[i - 1] == b'\r' { i - 1 } else { i };
                if len <= max {
                    return Poll::Ready(Ok((len, i + 1)));
                }
            }
            if unread.len() > max + 1 {
                return Poll::Ready(Err(invalid(too_long.to_owned())));
            }
            if ready!(self.buf.poll_fill(&mut self.io, cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside chunked framing",
                )));
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A chunk size: hex digits, optionally followed by `;extensions` (ignored).
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    let ok = !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_hexdigit);
    let text = std::str::from_utf8(digits).ok().filter(|_| ok);
    text.and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or_else(|| invalid("an invalid chunk size line"))
}

impl<R: AsyncRead + Unpin> AsyncRead for Body<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.state {
                State::Done => return Poll::Ready(Ok(0)),
                State::Length(0) => this.state = State::Done,
                State::Length(left) | State::Data(left) => {
                    let n = ready!(this.poll_some(cx, out, left))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the connection closed before the body's end",
                        )));
                    }
                    let left = left - n as u64;
                    this.state = match this.state {
                        State::Data(_) if left == 0 => State::DataEnd,
                        State::Data(_) => State::Data(left),
                        _ => State::Length(left),
                    };
                    return Poll::Ready(Ok(n));
                }
                State::Close => {
                    let n = ready!(this.poll_some(cx, out, u64::MAX))?;
                    if n == 0 {
                        this.state = State::Done;
                    }
                    return Poll::Ready(Ok(n));
                }
                State::Size => {
                    let (len, used) = ready!(this.poll_line(cx, MAX_CHUNK_LINE, "a chunk size line over 4 KiB"))?;
                    let size = chunk_size(&this.buf.unread()[..len])?;
                    this.buf.consume(used);
                    this.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    let (len, used) = ready!(this.poll_line(cx, 0, "chunk data longer than its declared size"))?;
                    debug_assert_eq!(len, 0);
                    this.buf.consume(used);
                    this.state = State::Size;
                }
                State::Trailers(seen) => {
                    let room = MAX_TRAILERS.saturating_sub(seen);
                    let (len, used) = ready!(this.poll_line(cx, room, "a trailer section over 16 KiB"))?;
                    this.buf.consume(used);
                    this.state = if len == 0 {
                        State::Done
                    } else {
                        State::Trailers(seen + used)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::AsyncReadExt;

    /// Yields its input `step` bytes per read, and `Pending` (with a wake) between reads, as a
    /// socket does when bytes trickle in.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            let n = self.step.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// The head, the body (or its error) and whether the connection could be reused.
    type Decoded = (Head, Result<Vec<u8>, String>, bool);

    fn decode(raw: &[u8], step: usize) -> Result<Decoded, String> {
        let mut io = Trickle {
            data: raw.to_vec(),
            at: 0,
            step,
            ready: false,
        };
        smol::block_on(async {
            let mut buf = Buf::default();
            let head = read_head(&mut io, &mut buf, "test")
                .await
                .map_err(|e| format!("{e:?}"))?;
            let mut body = Body::new(io, buf, head.framing);
            let mut out = Vec::new();
            let read = body.read_to_end(&mut out).await.map(|_| out).map_err(|e| e.to_string());
            let clean = head.reusable && body.ended_clean();
            Ok((head, read, clean))
        })
    }

    fn body_of(raw: &[u8]) -> Vec<u8> {
        let mut last = None;
        for step in [1, 2, 3, 7, 64, 100_000] {
            let (_, body, _) = decode(raw, step).unwrap();
            let body = body.unwrap();
            assert!(last.as_ref().is_none_or(|l| l == &body), "step {step}");
            last = Some(body);
        }
        last.unwrap()
    }

    #[test]
    fn chunked_bodies_decode_across_every_split_and_trailers_are_discarded() {
        let raw = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"x\"\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-t: caf\u{e9}\r\n\r\n";
        assert_eq!(body_of(raw.as_bytes()), b"hello world");
        let (_, _, reusable) = decode(raw.as_bytes(), 5).unwrap();
        assert!(reusable);
        // Bare LF line ends, as some servers send.
        assert_eq!(
            body_of(b"HTTP/1.1 200 OK\ntransfer-encoding: chunked\n\n3\nabc\n0\n\n"),
            b"abc"
        );
    }

    #[test]
    fn heads_keep_odd_statuses_skip_interim_and_drop_non_ascii() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 529 Overloaded\r\nx-note: caf\u{e9}\r\nretry-after: 3\r\ncontent-length: 2\r\n\r\nhi";
        let (head, body, reusable) = decode(raw.as_bytes(), 4).unwrap();
        assert_eq!(
            (head.status, head.header("x-note"), head.header("retry-after")),
            (529, None, Some("3"))
        );
        assert_eq!((body.unwrap(), reusable), (b"hi".to_vec(), true));
    }

    #[test]
    fn framing_rules() {
        // Close-framed: read to the end, never reused.
        let (_, body, reusable) = decode(b"HTTP/1.1 200 OK\r\n\r\nall of it", 3).unwrap();
        assert_eq!((body.unwrap(), reusable), (b"all of it".to_vec(), false));
        // Length and chunked: chunked wins, the connection is not reused.
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let (_, body, reusable) = decode(raw, 3).unwrap();
        assert_eq!((body.unwrap(), reusable), (b"ok".to_vec(), false));
        // Same length twice is one length; HTTP/1.0 and `Connection: close` are not reused.
        let (_, body, reusable) = decode(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", 1).unwrap();
        assert_eq!((body.unwrap(), reusable), (b"ok".to_vec(), true));
        assert!(!decode(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 1).unwrap().2);
        assert!(
            !decode(
                b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nok",
                1
            )
            .unwrap()
            .2
        );
        // Bytes past the body's end: the connection is not trusted again.
        assert!(
            !decode(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA", 100)
                .unwrap()
                .2
        );
        assert_eq!(decode(b"HTTP/1.1 204 No Content\r\n\r\n", 1).unwrap().1.unwrap(), b"");
    }

    #[test]
    fn hostile_heads_and_bodies_are_errors_not_panics() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 600 High\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
        ] {
            assert!(
                matches!(decode(raw, 3), Err(e) if e.starts_with("Malformed")),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(decode(b"", 3), Err(e) if e.starts_with("Lost")));
        let flood = [&b"HTTP/1.1 200 OK\r\nx: "[..], &vec![b'a'; 70_000]].concat();
        assert!(matches!(decode(&flood, 10_000), Err(e) if e.contains("KiB")));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x: y\r\n".repeat(200));
        assert!(matches!(decode(many.as_bytes(), 10_000), Err(e) if e.contains("fields")));
        for body in [
            &b"zz\r\n"[..],
            b"ffffffffffffffffff\r\n",
            b"3\r\nabcdef\r\n0\r\n\r\n",
            b"3\r\nab",
            b"10000000",
        ] {
            let raw = [&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..], body].concat();
            let (_, read, _) = decode(&raw, 2).unwrap();
            assert!(read.is_err(), "{}", String::from_utf8_lossy(body));
        }
        let endless_size = [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            &vec![b'1'; 10_000],
        ]
        .concat();
        assert!(decode(&endless_size, 1000)
            .unwrap()
            .1
            .unwrap_err()
            .contains("size line"));
        let trailers = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}\r\n",
            "x: y\r\n".repeat(5000)
        );
        assert!(decode(trailers.as_bytes(), 1000)
            .unwrap()
            .1
            .unwrap_err()
            .contains("trailer"));
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
        assert!(decode(short, 2).unwrap().1.is_err());
    }
}
