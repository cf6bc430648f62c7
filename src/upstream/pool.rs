use super::conn::Conn;
use http_types::Url;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept per origin; more than this are closed when returned.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Idle connections older than this are dropped rather than tried (servers time them out).
const MAX_IDLE_AGE: Duration = Duration::from_secs(50);

/// Which connections are interchangeable: same scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
}

impl PoolKey {
    pub(super) fn from_url(url: &Url) -> Option<PoolKey> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(PoolKey {
            tls,
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default()?,
        })
    }

    pub(super) fn origin(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "https" } else { "http" },
            self.host,
            self.port
        )
    }
}

/// Idle upstream connections, most recently returned last (reused first: warmest).
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<(Conn, Instant)>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    pub(super) fn take(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < MAX_IDLE_AGE && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put(&self, key: PoolKey, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_ORIGIN {
            list.push((conn, Instant::now()));
        }
    }
}
