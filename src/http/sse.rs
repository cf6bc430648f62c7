//! Server-sent events: a parser for upstream streams and a writer for ours.
//!
//! The parser follows the WHATWG framing: lines end in LF, CRLF (Gemini) or CR; `data:` lines
//! of one event are joined with LF; a blank line dispatches; lines starting with `:` are
//! comments (keep-alives); one space after the colon is dropped. Lines and events are bounded
//! (`[limits] max_sse_event_bytes`): an upstream cannot grow memory with a line that never ends.

use crate::budget::Hold;
use futures_lite::{AsyncBufRead, AsyncBufReadExt};
use std::io;
use std::pin::Pin;

/// What a stream's line and event may take before they count against the buffer budget:
/// ordinary events never do, so the budget costs nothing per event.
const FREE: usize = 64 << 10;

/// Makes `hold` what `bytes` of line and event take beyond [`FREE`]; `Err` when the budget
/// is spent.
fn held(hold: &mut Option<Hold>, bytes: usize) -> io::Result<()> {
    if hold
        .as_mut()
        .is_none_or(|h| h.resize(bytes.saturating_sub(FREE) as u64))
    {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::OutOfMemory,
        "memgate's buffer budget is spent ([limits] max_buffered_bytes)",
    ))
}

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    pub data: String,
}

/// Reads events from a byte stream, one at a time, as they arrive.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    line: Vec<u8>,
    /// The longest line, and the most data one event may gather.
    max: usize,
    /// What a line and event past [`FREE`] bytes hold from the process's buffer budget.
    hold: Option<Hold>,
    /// The data the event being read holds so far (counted with the line in `hold`).
    event_len: usize,
    /// A CR ended the last line, so an LF opening the next read belongs to it.
    after_cr: bool,
}

impl<R: AsyncBufRead + Unpin> Reader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Reader {
            inner,
            line: Vec::new(),
            max,
            hold: None,
            event_len: 0,
            after_cr: false,
        }
    }

    /// Counts a large line or event against `hold`'s budget; past it the stream fails.
    pub fn with_budget(mut self, hold: Hold) -> Self {
        self.hold = Some(hold);
        self
    }

    /// The next event, or `None` at the end of the stream. An event cut off by the end of the
    /// stream (no closing blank line) is discarded, as the spec says.
    pub async fn next(&mut self) -> io::Result<Option<Event>> {
        // The last event went to the caller: what it held is given back.
        self.event_len = 0;
        held(&mut self.hold, 0)?;
        let mut ev = Event::default();
        let mut has_data = false;
        loop {
            let Some(line) = self.read_line().await? else {
                return Ok(None);
            };
            if line.is_empty() {
                if has_data {
                    return Ok(Some(ev));
                }
                ev = Event::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => (&line[..i], line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..])),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    if ev.data.len() + usize::from(has_data) + value.len() > self.max {
                        return Err(self.too_big("event"));
                    }
                    self.event_len = ev.data.len() + 1 + value.len();
                    held(&mut self.hold, self.event_len)?;
                    if has_data {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(value);
                    has_data = true;
                }
                "event" => ev.event = Some(value.to_owned()),
                _ => {} // `id:` and `retry:` mean nothing to a one-shot relay.
            }
        }
    }

    fn too_big(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("an SSE {what} over {} bytes (limits.max_sse_event_bytes)", self.max),
        )
    }

    async fn read_line(&mut self) -> io::Result<Option<String>> {
        self.line.clear();
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                break;
            }
            let mut start = 0;
            if self.after_cr && buf[0] == b'\n' {
                start = 1;
            }
            self.after_cr = false;
            let end = buf[start..].iter().position(|&b| b == b'\n' || b == b'\r');
            let grown = self.line.len() + end.unwrap_or(buf.len() - start);
            if grown > self.max {
                return Err(self.too_big("line"));
            }
            held(&mut self.hold, self.event_len + grown)?;
            match end {
                Some(i) => {
                    self.line.extend_from_slice(&buf[start..start + i]);
                    let end = buf[start + i];
                    let mut used = start + i + 1;
                    if end == b'\r' {
                        if buf.get(used) == Some(&b'\n') {
                            used += 1;
                        } else if used == buf.len() {
                            self.after_cr = true;
                        }
                    }
                    Pin::new(&mut self.inner).consume(used);
                    break;
                }
                None => {
                    self.line.extend_from_slice(&buf[start..]);
                    let n = buf.len();
                    Pin::new(&mut self.inner).consume(n);
                }
            }
        }
        String::from_utf8(std::mem::take(&mut self.line))
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "SSE line is not valid UTF-8"))
    }
}

/// Encodes one event; multi-line data becomes several `data:` lines.
pub fn frame(event: Option<&str>, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], chunk: usize) -> Vec<Event> {
        parse_within(bytes, chunk, 1 << 20).unwrap()
    }

    fn parse_within(bytes: &[u8], chunk: usize, max: usize) -> io::Result<Vec<Event>> {
        // Feed in small chunks so line endings split across reads are exercised.
        let chunks: Vec<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
        let stream = futures_lite::stream::iter(chunks.into_iter().map(Ok::<_, io::Error>));
        let mut r = Reader::new(futures_lite::io::BufReader::new(StreamReader(Box::pin(stream))), max);
        smol::block_on(async {
            let mut out = Vec::new();
            while let Some(e) = r.next().await? {
                out.push(e);
            }
            Ok(out)
        })
    }

    #[test]
    fn lines_and_events_past_the_bound_are_errors() {
        // `data: ` plus 10 bytes is a 16-byte line holding 10 bytes of data.
        let line = format!("data: {}\n\n", "a".repeat(10));
        for chunk in [1, 5, 100] {
            assert_eq!(parse_within(line.as_bytes(), chunk, 16).unwrap().len(), 1);
            let e = parse_within(line.as_bytes(), chunk, 15).unwrap_err();
            assert!(e.to_string().contains("max_sse_event_bytes"), "{e}");
        }
        // Short lines that add up to an event over the bound.
        let event = "data: aaaaa\n".repeat(4) + "\n";
        assert_eq!(parse_within(event.as_bytes(), 3, 23).unwrap()[0].data.len(), 23);
        assert!(parse_within(event.as_bytes(), 3, 22).is_err());
    }

    struct StreamReader<S>(std::pin::Pin<Box<S>>);
    impl<S: futures_lite::Stream<Item = io::Result<Vec<u8>>>> futures_lite::AsyncRead for StreamReader<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            match self.0.as_mut().poll_next(cx) {
                std::task::Poll::Ready(Some(Ok(v))) => {
                    buf[..v.len()].copy_from_slice(&v);
                    std::task::Poll::Ready(Ok(v.len()))
                }
                std::task::Poll::Ready(Some(Err(e))) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Ready(None) => std::task::Poll::Ready(Ok(0)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        }
    }

    #[test]
    fn lf_crlf_and_cr_framings_agree() {
        let lf = b": ping\n\nevent: a\ndata: {\"x\":1}\ndata: two\n\ndata: [DONE]\n\n".to_vec();
        let crlf: Vec<u8> = String::from_utf8(lf.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        let cr: Vec<u8> = String::from_utf8(lf.clone()).unwrap().replace('\n', "\r").into_bytes();
        let want = vec![
            Event {
                event: Some("a".into()),
                data: "{\"x\":1}\ntwo".into(),
            },
            Event {
                event: None,
                data: "[DONE]".into(),
            },
        ];
        for chunk in [1, 2, 3, 7, 1000] {
            assert_eq!(parse(&lf, chunk), want, "lf/{chunk}");
            assert_eq!(parse(&crlf, chunk), want, "crlf/{chunk}");
            assert_eq!(parse(&cr, chunk), want, "cr/{chunk}");
        }
    }

    #[test]
    fn truncated_event_is_dropped_and_frame_round_trips() {
        assert!(parse(b"data: partial", 4).is_empty());
        let f = frame(Some("response.created"), "a\nb");
        assert_eq!(
            parse(&f, 5),
            vec![Event {
                event: Some("response.created".into()),
                data: "a\nb".into()
            }]
        );
    }
}
