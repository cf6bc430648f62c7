//! systemd's readiness protocol (`Type=notify`): state lines sent as one datagram to the unix
//! socket named by `$NOTIFY_SOCKET`, a path or, with a leading '@', an abstract name.
//!
//! Written by hand: the protocol is one `sendto`, not worth a crate. Without `$NOTIFY_SOCKET`
//! (not run by systemd, or `Type=simple`) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state`, newline-separated `KEY=VALUE` lines such as `READY=1` or `STATUS=…`.
///
/// Failures are logged, never fatal: a gateway that serves but cannot tell systemd is better
/// than one that refuses to serve (systemd then times the start out and says why).
pub fn send(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&target, state) {
        log::warn!(
            "cannot notify systemd at NOTIFY_SOCKET={}: {e}",
            target.to_string_lossy()
        );
    }
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (systemd's `WatchdogSec=`), when it
/// is set and `$WATCHDOG_PID` is unset or names this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Feeds systemd's watchdog for ever. Spawned on the executor that serves requests: if that
/// executor wedges, the pings stop and systemd restarts the service.
pub async fn watchdog(every: Duration) {
    loop {
        send("WATCHDOG=1");
        smol::Timer::after(every).await;
    }
}

/// How much more start (or stop) time to ask for while a long step runs.
const EXTEND_BY: Duration = Duration::from_secs(30);

/// Asks systemd for [`EXTEND_BY`] more time: the store calls it (at most once a second) while
/// a database that was not closed cleanly is repaired, so `Type=notify`'s start timeout does not
/// kill a long repair.
pub fn extend_timeout() {
    send(&format!(
        "EXTEND_TIMEOUT_USEC={}\nSTATUS=repairing the database (it was not closed cleanly)",
        EXTEND_BY.as_micros()
    ));
}

fn send_to(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    // systemd drains its socket promptly; if it ever did not, a lost status line beats a
    // stalled executor thread.
    socket.set_nonblocking(true)?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        return send_abstract(&socket, name, state);
    }
    socket.send_to(state.as_bytes(), target).map(drop)
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}
