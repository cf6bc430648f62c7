//! Streaming: upstream SSE events in, client SSE frames out, one at a time, never buffered.
//!
//! A task pumps each upstream event through a format translator and into the response body's
//! frame channel as soon as it arrives. It stops early when the client goes away (a peek on the
//! socket sees the FIN, or the channel closes), dropping the upstream connection, which cancels
//! the generation. An upstream that breaks off or falls silent ends the client's stream with an
//! error event and no clean terminator, so SDKs raise instead of returning a truncated answer.
//!
//! With memory on, the exchange is committed before the client sees the terminal event, so a
//! client that read the end of one answer finds it remembered in its next request. A stream
//! cut short stores what arrived, marked incomplete.

use super::{AccessLog, Ctx};
use crate::error::ApiError;
use crate::http::{frame_channel, sse, sse_response, FrameSender, Peer};
use crate::ir::{Message, Usage};
use crate::memory::Turn;
use crate::upstream::{EventStream, UpstreamResponse};
use futures_lite::future;
use http_types::Response;
use std::time::Duration;

/// Frames already queued between the pump and the socket; small, so a slow client slows the
/// upstream read instead of growing memory.
const FRAMES_IN_FLIGHT: usize = 8;

/// How long the rest of an upstream stream is read after the answer's end, for connection reuse.
const DRAIN_AFTER_END: Duration = Duration::from_secs(2);

/// Turns one inbound format's upstream events into the client's frames.
pub(crate) trait Translate: Send + 'static {
    /// The frames to send for one upstream event (none, one or several); `Err` when the
    /// upstream reported an error mid-stream, which ends the stream.
    fn event(&mut self, ev: sse::Event) -> Result<Vec<Vec<u8>>, ApiError>;
    /// Whether the upstream has signalled a clean end of the answer.
    fn finished(&self) -> bool;
    fn usage(&self) -> Option<Usage>;
    /// Whether [`usage`](Self::usage) is memgate's estimate rather than the upstream's count.
    fn usage_estimated(&self) -> bool {
        false
    }
    /// The assistant's answer as far as it has arrived, for memory.
    fn answer(&self) -> Option<Message>;
    /// The client's frame for a stream that broke off (OpenAI's in-stream error object).
    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        sse::frame(None, &e.body().to_string())
    }
}

/// Starts relaying `upstream` and returns the streaming response at once.
pub(crate) fn relay(
    ctx: &mut Ctx,
    upstream: UpstreamResponse,
    translate: impl Translate,
    turn: Option<Turn>,
) -> Response {
    let (tx, body) = frame_channel(FRAMES_IN_FLIGHT);
    // The pump holds `alive`; when it ends, the heartbeat stops and drops its sender, so the
    // body ends too.
    let (alive, pumping) = async_channel::bounded::<()>(1);
    if let Some(every) = ctx.app.sse_keepalive {
        crate::runtime::spawn(heartbeat(tx.clone(), pumping, every)).detach();
    }
    let task = pump(upstream.events(), tx, ctx.peer.clone(), translate, ctx.log.take(), turn);
    crate::runtime::spawn(async move {
        task.await;
        drop(alive);
    })
    .detach();
    sse_response(body)
}

/// Sends an SSE comment every `every` until the pump ends: a long silence upstream (a model
/// thinking) must not look like a dead connection to a proxy or a client's read timeout.
async fn heartbeat(tx: FrameSender, pumping: async_channel::Receiver<()>, every: Duration) {
    loop {
        let tick = async {
            smol::Timer::after(every).await;
            true
        };
        let ended = async {
            let _ = pumping.recv().await;
            false
        };
        if !future::or(ended, tick).await || tx.send(b": keep-alive\n\n".to_vec()).await.is_err() {
            return;
        }
    }
}

enum End {
    Clean,
    ClientGone,
    Broken(ApiError),
}

async fn pump(
    mut events: EventStream,
    tx: FrameSender,
    peer: Peer,
    mut t: impl Translate,
    log: Option<AccessLog>,
    mut turn: Option<Turn>,
) {
    let end = 'relay: loop {
        let next = future::or(async { Some(events.next().await) }, async {
            peer.closed().await;
            None
        });
        match next.await {
            None => break End::ClientGone,
            Some(Ok(Some(ev))) => {
                let frames = match t.event(ev) {
                    Ok(frames) => frames,
                    Err(e) => break End::Broken(e),
                };
                if let Some(turn) = turn.take_if(|_| t.finished()) {
                    if let Err(e) = turn.finish(t.answer(), true).await {
                        break End::Broken(e);
                    }
                }
                for frame in frames {
                    if tx.send(frame).await.is_err() {
                        break 'relay End::ClientGone;
                    }
                }
                if t.finished() {
                    // The answer is whole. Reading on to the end lets the connection go back to
                    // the pool, but an upstream that then falls silent must not hold the client.
                    let rest = async { while let Ok(Some(_)) = events.next().await {} };
                    let limit = async {
                        smol::Timer::after(DRAIN_AFTER_END).await;
                    };
                    future::or(rest, limit).await;
                    break End::Clean;
                }
            }
            Some(Ok(None)) if t.finished() => break End::Clean,
            Some(Ok(None)) => {
                break End::Broken(ApiError::stream_interrupted(
                    "the upstream ended the stream before finishing the answer",
                ))
            }
            Some(Err(m)) => break End::Broken(ApiError::stream_interrupted(m)),
        }
    };
    if let Some(turn) = turn {
        if let Err(e) = turn.finish(t.answer(), false).await {
            log::error!("the partial answer could not be stored: {e}");
        }
    }
    let outcome = match &end {
        End::Clean => "complete",
        End::ClientGone => "client-disconnected",
        End::Broken(e) => {
            log::warn!("stream ended early: {}", e.message);
            let _ = tx.send(t.error_frame(e)).await;
            "interrupted"
        }
    };
    if let Some(mut log) = log {
        log.usage = t.usage();
        log.estimated = t.usage_estimated();
        log.stream = Some(outcome);
        log.finish(200);
    }
}
