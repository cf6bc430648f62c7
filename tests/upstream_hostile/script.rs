//! A scripted upstream: a plain std TCP server that reads each request and lets the test write
//! the exact answer bytes, so heads, framing and bodies can be anything an upstream might send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which connection carried it (0 for the first accepted).
    pub conn: usize,
    pub body: Vec<u8>,
}

/// Writes the answer to request number `index`; returns whether to keep the connection open.
pub type Handler = dyn Fn(usize, &Seen, &mut TcpStream) -> bool + Send + Sync;

pub struct Scripted {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn start(handler: impl Fn(usize, &Seen, &mut TcpStream) -> bool + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let record = seen.clone();
        std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = conns.fetch_add(1, Ordering::SeqCst);
                let (handler, record) = (handler.clone(), record.clone());
                std::thread::spawn(move || serve(conn, stream, &*handler, &record));
            }
        });
        Scripted { url, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(conn: usize, mut stream: TcpStream, handler: &Handler, record: &Mutex<Vec<Seen>>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let seen = Seen { conn, body };
        let index = {
            let mut r = record.lock().unwrap();
            r.push(seen.clone());
            r.len() - 1
        };
        if !handler(index, &seen, &mut stream) {
            let _ = stream.flush();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// A complete answer: `head` lines (without the blank line) and a Content-Length body.
pub fn sized(head: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{head}\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// A chunked answer cut into `pieces` chunks, then `trailers` (raw lines, each ending CRLF).
pub fn chunked(head: &str, body: &[u8], pieces: usize, trailers: &[u8]) -> Vec<u8> {
    let mut out = format!("{head}\r\ntransfer-encoding: chunked\r\n\r\n").into_bytes();
    for c in body.chunks(body.len().div_ceil(pieces.max(1)).max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `bytes` of `fill` as 64 KiB chunks of a chunked body, stopping when the reader
/// goes away; returns how much was written.
pub fn endless_chunks(stream: &mut TcpStream, fill: u8, bytes: usize) -> usize {
    let block = vec![fill; 64 << 10];
    let mut frame = format!("{:x}\r\n", block.len()).into_bytes();
    frame.extend_from_slice(&block);
    frame.extend_from_slice(b"\r\n");
    let mut sent = 0;
    while sent < bytes && stream.write_all(&frame).is_ok() {
        sent += block.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    sent
}
