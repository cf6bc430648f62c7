use super::head::HeadGuard;
use crate::error::ApiError;
use crate::http::error_response;
use crate::tasks::Tasks;
use futures_lite::{future, io, AsyncReadExt};
use http_types::{Method, Request, Response};
use smol::net::{SocketAddr, TcpListener, TcpStream};
use smol::Timer;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connection-level limits; a config reload changes them for the connections that follow.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Longest a client may take to send a request head (bounds slowloris).
    pub header_timeout: Duration,
    /// Longest an idle keep-alive connection is held open.
    pub keepalive_timeout: Duration,
    /// Open connections at most; one more is answered a 503 and closed (`None`: no limit).
    pub max_connections: Option<usize>,
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

/// File descriptors beyond the client connections: the listener, upstream connections, the
/// database, the admin socket, logs.
const FD_RESERVE: u64 = 256;

/// The soft `Max open files` limit in `/proc/self/limits` text.
fn open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Warns when `max_connections` cannot be reached: past the open-file limit `accept` fails
/// (EMFILE) and clients wait unanswered in the queue instead of getting the 503.
fn check_open_files(max_connections: Option<usize>) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let (Some(max), Some(files)) = (max_connections, open_file_limit(&limits)) {
        if files < max as u64 + FD_RESERVE {
            log::warn!(
                "the open-file limit ({files}) is below [limits] max_connections ({max}) plus {FD_RESERVE} for \
                 upstreams and the database: connections past it wait unanswered. Raise it (LimitNOFILE= in \
                 the systemd unit, `ulimit -n`) or lower max_connections"
            );
        }
    }
}

/// A connection over `max_connections`: a 503 and a close, at once, rather than a queue.
async fn turn_away(mut stream: TcpStream) {
    use futures_lite::AsyncWriteExt;
    let body = r#"{"error":{"message":"memgate is at its connection limit ([limits] max_connections); retry shortly","type":"server_error","param":null,"code":"overloaded"}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Read what the client sent meanwhile, briefly, so the close is not a reset that loses
    // the answer.
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let limit = async {
        Timer::after(Duration::from_millis(200)).await;
    };
    future::or(drain, limit).await;
}

/// The accept loop and its connections: serves until [`Server::stop`], then lets shutdown
/// wait for the requests in flight and cut off what is left.
#[derive(Debug)]
pub struct Server {
    options: Mutex<ServerOptions>,
    connections: Tasks,
    /// Closed by [`Server::stop`]: the accept loop ends and idle connections close.
    stop: async_channel::Sender<()>,
    stopped: async_channel::Receiver<()>,
    /// Requests between their head and the end of their response.
    in_flight: AtomicUsize,
    /// Responses finished, counted for the shutdown report.
    completed: AtomicUsize,
}

impl Server {
    pub fn new(options: ServerOptions) -> Arc<Server> {
        let (stop, stopped) = async_channel::bounded(1);
        Arc::new(Server {
            options: Mutex::new(options),
            connections: Tasks::default(),
            stop,
            stopped,
            in_flight: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
        })
    }

    fn options(&self) -> ServerOptions {
        *self.options.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies to connections accepted from now on.
    pub fn set_options(&self, options: ServerOptions) {
        *self.options.lock().unwrap_or_else(|p| p.into_inner()) = options;
    }

    /// Accepts connections until [`Server::stop`], serving each on its own task. Returning drops
    /// the listener, so from then on connection attempts are refused.
    pub async fn serve<H, F>(self: &Arc<Self>, listener: TcpListener, handler: H)
    where
        H: Fn(Request, Peer) -> F + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
    {
        let handler = Arc::new(handler);
        check_open_files(self.options().max_connections);
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                let _ = self.stopped.recv().await;
                None
            })
            .await;
            match accepted {
                None => return,
                Some(Ok((stream, _)))
                    if self
                        .options()
                        .max_connections
                        .is_some_and(|m| self.connections.len() >= m) =>
                {
                    crate::runtime::spawn(turn_away(stream)).detach();
                }
                Some(Ok((stream, addr))) => {
                    let (server, handler) = (self.clone(), handler.clone());
                    self.connections.spawn(connection(server, stream, addr, handler));
                }
                Some(Err(e)) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    log::warn!("accept failed: {e}");
                    Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Stops accepting; idle connections close, busy ones close after their current response.
    pub fn stop(&self) {
        self.stop.close();
        self.connections.close();
    }

    fn stopping(&self) -> bool {
        self.stop.is_closed()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Responses finished since start.
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Resolves when every connection has closed (after [`Server::stop`]).
    pub async fn drained(&self) {
        self.connections.ended().await;
    }

    /// Cuts off the connections still open; returns how many requests were in flight on them.
    pub async fn abandon(&self) -> usize {
        let requests = self.in_flight();
        self.connections.cancel().await;
        requests
    }
}

async fn connection<H, F>(server: Arc<Server>, stream: TcpStream, addr: SocketAddr, handler: Arc<H>)
where
    H: Fn(Request, Peer) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    // Dropped last, also when shutdown cancels this connection: the socket must end for every
    // clone of it (a relay task watching `Peer::closed` then lets go at once).
    let _close = CloseOnDrop(stream.clone());
    let peer = Peer {
        addr,
        stream: stream.clone(),
    };
    let opts = server.options();
    loop {
        // Idle keep-alive: wait for the first byte of the next request, or give up. Shutdown
        // closes idle connections at once: nobody is waiting on them.
        let mut b = [0u8; 1];
        let first = future::or(async { stream.peek(&mut b).await.ok() }, async {
            let idle = async {
                Timer::after(opts.keepalive_timeout).await;
            };
            future::or(idle, async {
                let _ = server.stopped.recv().await;
            })
            .await;
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
        server.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut res = handler(req, peer.clone()).await;
        // Shutdown began meanwhile: this is the connection's last response, and the client
        // should know not to send another on it.
        if server.stopping() {
            res.insert_header("connection", "close");
        }
        close |= connection_close(res.header("connection"));
        let written = write_response(&stream, res, method).await;
        server.in_flight.fetch_sub(1, Ordering::SeqCst);
        server.completed.fetch_add(1, Ordering::SeqCst);
        if written.is_err() {
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
        let drained = matches!(drained.await, Some(n) if n <= DRAIN_LIMIT);
        // At shutdown, a connection whose request was read whole closes at once: lingering
        // would hold the exit for a client that keeps its end open.
        if drained && server.stopping() {
            return;
        }
        if close || !drained {
            return linger(&stream).await;
        }
    }
}

/// Shuts the socket both ways when dropped.
struct CloseOnDrop(TcpStream);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_file_limit(text), Some(1024));
        assert_eq!(open_file_limit("Max open files unlimited unlimited files\n"), None);
    }
}
