use futures_lite::{AsyncBufRead, AsyncRead, Stream};
use http_types::Body;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The producing side of a streamed response body; each `send` becomes one HTTP chunk.
pub type FrameSender = async_channel::Sender<Vec<u8>>;

/// A streamed body fed by a bounded channel of frames.
///
/// The reader hands out one frame per read and never waits to fill its buffer, so async-h1
/// writes each frame as its own chunk the moment it arrives. The bound (a few frames) gives
/// backpressure: a slow client slows the upstream read instead of growing memory. When the
/// client goes away the body is dropped, the channel closes, and the producer's next `send`
/// fails, which is its signal to cancel the upstream request.
pub fn frame_channel(capacity: usize) -> (FrameSender, Body) {
    let (tx, rx) = async_channel::bounded(capacity);
    let reader = FrameReader {
        rx: Box::pin(rx),
        frame: Vec::new(),
        pos: 0,
    };
    (tx, Body::from_reader(reader, None))
}

struct FrameReader {
    // async-channel receivers are !Unpin; pinning on the heap keeps the reader Unpin.
    rx: Pin<Box<async_channel::Receiver<Vec<u8>>>>,
    frame: Vec<u8>,
    pos: usize,
}

impl AsyncBufRead for FrameReader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.pos >= this.frame.len() {
            match this.rx.as_mut().poll_next(cx) {
                Poll::Ready(Some(frame)) => {
                    this.frame = frame;
                    this.pos = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.frame[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.frame.len());
    }
}

impl AsyncRead for FrameReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(buf)) => {
                let n = buf.len().min(out.len());
                out[..n].copy_from_slice(&buf[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}
