use super::head::HeadGuard;
use crate::error::ApiError;
use crate::http::error_response;
use futures_lite::{future, io, AsyncReadExt};
use http_types::{Method, Request, Response};
use smol::net::{SocketAddr, TcpListener, TcpStream};
use smol::Timer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Connection-level limits for [`serve`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Longest a client may take to send a request head (bounds slowloris).
    pub header_timeout: Duration,
    /// Longest an idle keep-alive connection is held open.
    pub keepalive_timeout: Duration,
}

/// The client end of a connection, handed to the handler with each request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    stream: TcpStream,
}

impl Peer {
    /// Resolves when the client closes its end.
    ///
    /// async-h1 only notices a disconnect when a write fails, which for a slow model can be many
    /// seconds of paid tokens later. A peek sees the FIN at once. Only meaningful after the
    /// request body was read: until then the peek would see body bytes.
    pub async fn closed(&self) {
        let mut b = [0u8; 1];
        match self.stream.peek(&mut b).await {
            Ok(0) | Err(_) => {}
            // The client sent more (a pipelined request): we cannot tell, so never resolve.
            Ok(_) => future::pending().await,
        }
    }
}

/// Unread request body we will swallow to keep a connection alive; beyond it we close instead.
const DRAIN_LIMIT: u64 = 256 << 10;
/// Input swallowed while lingering before a close.
const LINGER_LIMIT: u64 = 4 << 20;

/// Accepts connections until `stop` closes, serving each on its own task.
pub async fn serve<H, F>(listener: TcpListener, opts: ServerOptions, handler: H, stop: async_channel::Receiver<()>)
where
    H: Fn(Request, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let opts = Arc::new(opts);
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, addr))) => {
                let (handler, opts) = (handler.clone(), opts.clone());
                crate::runtime::spawn(connection(stream, addr, opts, handler)).detach();
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning on the error.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<H, F>(stream: TcpStream, addr: SocketAddr, opts: Arc<ServerOptions>, handler: Arc<H>)
where
    H: Fn(Request, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    let peer = Peer {
        addr,
        stream: stream.clone(),
    };
    loop {
        // Idle keep-alive: wait for the first byte of the next request, or give up.
        let mut b = [0u8; 1];
        let first = future::or(async { stream.peek(&mut b).await.ok() }, async {
            Timer::after(opts.keepalive_timeout).await;
            None
        });
        if !matches!(first.await, Some(n) if n > 0) {
            return;
        }
        let guard = HeadGuard::new(stream.clone());
        let head = future::or(async { Some(async_h1::server::decode(guard.clone()).await) }, async {
            Timer::after(opts.header_timeout).await;
            None
        });
        let (req, mut body) = match head.await {
            None => {
                let err = ApiError::new_status(408, "request head not received in time");
                return reply_and_close(&stream, err, Method::Get).await;
            }
            Some(Err(e)) => {
                // async-h1 tags most parse failures 500; to the client they are its own 4xx.
                let err = match (guard.verdict(), u16::from(e.status())) {
                    (Some(v), _) => ApiError::new_status(v.status(), &v.message()),
                    (None, s) => {
                        let status = if (400..500).contains(&s) { s } else { 400 };
                        ApiError::new_status(status, &format!("malformed HTTP request: {e}"))
                    }
                };
                return reply_and_close(&stream, err, Method::Get).await;
            }
            Some(Ok(None)) => return,
            Some(Ok(Some(pair))) => pair,
        };
        let method = req.method();
        let mut close = connection_close(req.header("connection"));
        let res = handler(req, peer.clone()).await;
        close |= connection_close(res.header("connection"));
        if write_response(&stream, res, method).await.is_err() {
            return;
        }
        // Whatever body the handler left unread must go before the next request can be parsed.
        let drained = future::or(
            async { io::copy((&mut body).take(DRAIN_LIMIT + 1), &mut io::sink()).await.ok() },
            async {
                Timer::after(Duration::from_secs(1)).await;
                None
            },
        );
        if close || !matches!(drained.await, Some(n) if n <= DRAIN_LIMIT) {
            return linger(&stream).await;
        }
    }
}

fn connection_close(v: Option<&http_types::headers::HeaderValues>) -> bool {
    v.is_some_and(|v| v.as_str().eq_ignore_ascii_case("close"))
}

async fn reply_and_close(stream: &TcpStream, err: ApiError, method: Method) {
    let mut res = error_response(&err);
    res.insert_header("connection", "close");
    let _ = write_response(stream, res, method).await;
    linger(stream).await;
}

/// Writes a response. A sized body goes out with its head in one write (one packet, not two);
/// a streamed body is copied chunk by chunk, each flushed as it comes.
async fn write_response(stream: &TcpStream, res: Response, method: Method) -> std::io::Result<()> {
    use futures_lite::AsyncWriteExt;
    let sized = res.len().is_some();
    let mut encoder = async_h1::server::Encoder::new(res, method);
    if sized {
        let mut bytes = Vec::with_capacity(1024);
        encoder.read_to_end(&mut bytes).await?;
        stream.clone().write_all(&bytes).await
    } else {
        io::copy(&mut encoder, &mut stream.clone()).await.map(drop)
    }
}

/// Closes after a response while the client may still be sending (an oversized body or head).
///
/// Closing a socket with unread input makes the kernel send a reset, which can destroy our
/// response in the client's buffer before it is read. So: stop writing, swallow input for a
/// moment, then close (what nginx calls a lingering close).
async fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = io::sink();
    let swallow = io::copy(stream.clone().take(LINGER_LIMIT), &mut sink);
    let _ = future::or(async { swallow.await.ok() }, async {
        Timer::after(Duration::from_secs(2)).await;
        None
    })
    .await;
}
