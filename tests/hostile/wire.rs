//! Raw-socket clients for hostile tests: send exact bytes, trickle them, flood them, and tell an
//! answer from a close.

use crate::common::{read_response, Resp};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// What came back on one connection.
pub struct Outcome {
    pub bytes: Vec<u8>,
    /// The server closed (or reset) the connection; false means the read timed out.
    pub closed: bool,
}

impl Outcome {
    pub fn response(&self) -> Resp {
        read_response(&mut std::io::Cursor::new(&self.bytes))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Sends `raw` on a fresh connection and reads until the server closes or `timeout` passes.
pub fn exchange(addr: &str, raw: &[u8], timeout: Duration) -> Outcome {
    let mut s = TcpStream::connect(addr).unwrap();
    // The server may answer and close before all of it is written: that is allowed.
    let _ = s.write_all(raw);
    read_until_close(&mut s, timeout)
}

/// Sends `raw`, half-closes, and reads until the server closes or `timeout` passes.
pub fn send_and_half_close(addr: &str, raw: &[u8], timeout: Duration) -> Outcome {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(raw);
    let _ = s.shutdown(Shutdown::Write);
    read_until_close(&mut s, timeout)
}

fn read_until_close(s: &mut TcpStream, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome { bytes, closed: false };
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Outcome { bytes, closed: true },
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Outcome { bytes, closed: true },
        }
    }
}

/// Sends `prefix`, then one `drip` every `every` until the server answers; returns the answer
/// and how long the connection was held.
pub fn trickle(addr: &str, prefix: &[u8], drip: &[u8], every: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(prefix).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(30) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Once answered, stop feeding and wait for the close.
                if got.is_empty() && s.write_all(drip).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

/// How far one endless header line got before the server cut it off.
pub struct Flood {
    pub sent: usize,
    pub answer: String,
}

/// Sends a head whose last header line never ends, up to `max` bytes.
pub fn flood_one_line(addr: &str, max: usize) -> Flood {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sent = 0;
    if s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-flood: ")
        .is_ok()
    {
        let block = vec![b'a'; 64 << 10];
        while sent < max && s.write_all(&block).is_ok() {
            sent += block.len();
        }
    }
    let out = read_until_close(&mut s, Duration::from_secs(5));
    Flood {
        sent,
        answer: out.text(),
    }
}

/// Whether the server has closed this connection (after whatever it sent first).
pub fn peer_closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The process's peak resident set, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
