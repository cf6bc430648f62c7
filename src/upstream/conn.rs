use super::pool::PoolKey;
use async_native_tls::TlsStream;
use futures_lite::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

type SharedTls = async_dup::Arc<async_dup::Mutex<TlsStream<TcpStream>>>;

/// One upstream connection, plain or TLS. Cloning shares the socket: async-h1 writes the
/// request on one clone and reads the response on another, and the pool keeps a third.
#[derive(Clone)]
pub(super) struct Conn {
    io: Io,
    /// The raw socket under the TLS layer, for non-consuming liveness checks.
    tcp: TcpStream,
}

#[derive(Clone)]
enum Io {
    Plain(TcpStream),
    // A TLS stream is not `Clone`; async-dup shares it behind a lock.
    Tls(SharedTls),
}

impl Conn {
    pub(super) async fn open(key: &PoolKey) -> io::Result<Conn> {
        let tcp = TcpStream::connect((key.host.as_str(), key.port)).await?;
        tcp.set_nodelay(true)?;
        let io = if key.tls {
            // Builds an OpenSSL context per handshake (tens of ms of CPU): acceptable because the
            // pool makes handshakes rare. CA roots come from SSL_CERT_FILE / SSL_CERT_DIR or the
            // distro bundle; with none, verification fails closed.
            let tls = async_native_tls::TlsConnector::new()
                .connect(key.host.as_str(), tcp.clone())
                .await
                .map_err(|e| io::Error::other(format!("TLS handshake with {}: {e}", key.host)))?;
            Io::Tls(async_dup::Arc::new(async_dup::Mutex::new(tls)))
        } else {
            Io::Plain(tcp.clone())
        };
        Ok(Conn { io, tcp })
    }

    /// False when the server has closed the connection (or sent unsolicited bytes) while idle.
    pub(super) fn is_reusable(&self) -> bool {
        let mut b = [0u8; 1];
        // A readable idle socket means EOF or garbage; either way it cannot carry a request.
        futures_lite::future::block_on(futures_lite::future::poll_once(self.tcp.peek(&mut b))).is_none()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_close(cx),
            Io::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}
