//! Key management (and later thread management) for the CLI, local or through the server.
//!
//! redb admits one process per database file. When the server runs it holds the file, so it
//! also listens on `data_dir/admin.sock` (mode 0600, inside the 0700 data_dir: only the service
//! user and root reach it) and the CLI sends its command there. When no server runs, the CLI
//! opens the file itself. Either way the same [`execute`] does the work.
//!
//! Protocol: one JSON request line, one JSON reply line, then the server closes.

use crate::store::{KeyRecord, Store, StoreError};
use miniserde::{json, Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// File name of the admin socket inside `data_dir`.
pub const SOCKET_FILE: &str = "admin.sock";

#[derive(Debug, Serialize, Deserialize)]
pub struct AdminRequest {
    /// `keys.create`, `keys.list` or `keys.revoke`.
    pub op: String,
    pub name: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AdminReply {
    pub error: Option<String>,
    pub key: Option<String>,
    pub keys: Option<Vec<KeyRecord>>,
}

/// Carries out one admin request against the store.
pub fn execute(store: &Store, req: &AdminRequest) -> AdminReply {
    let name = || {
        req.name
            .as_deref()
            .ok_or_else(|| StoreError::Conflict(format!("{} needs a name", req.op)))
    };
    let result = match req.op.as_str() {
        "keys.create" => name().and_then(|n| store.create_key(n)).map(|k| AdminReply {
            key: Some(k),
            ..<AdminReply as Default>::default()
        }),
        "keys.list" => store.list_keys().map(|k| AdminReply {
            keys: Some(k),
            ..<AdminReply as Default>::default()
        }),
        "keys.revoke" => name()
            .and_then(|n| store.revoke_key(n))
            .map(|()| <AdminReply as Default>::default()),
        other => Err(StoreError::Conflict(format!("unknown admin operation {other:?}"))),
    };
    result.unwrap_or_else(|e| AdminReply {
        error: Some(e.to_string()),
        ..<AdminReply as Default>::default()
    })
}

/// Serves the admin socket until the process ends.
pub async fn listen(dir: &Path, store: Store) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET_FILE);
    // Only the holder of the database lock gets here, so a socket file left is stale.
    let _ = std::fs::remove_file(&path);
    let listener = smol::net::unix::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let store = store.clone();
        crate::runtime::spawn(async move {
            use futures_lite::{AsyncBufReadExt, AsyncWriteExt};
            let mut line = String::new();
            let mut reader = futures_lite::io::BufReader::new(stream.clone());
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match json::from_str::<AdminRequest>(line.trim()) {
                Ok(req) => smol::unblock(move || execute(&store, &req)).await,
                Err(_) => AdminReply {
                    error: Some("malformed admin request".to_owned()),
                    ..<AdminReply as Default>::default()
                },
            };
            let mut out = json::to_string(&reply);
            out.push('\n');
            let mut stream = stream;
            let _ = stream.write_all(out.as_bytes()).await;
        })
        .detach();
    }
}

/// The CLI's way to the data: the file itself, or the running server's socket.
pub enum Admin {
    Local(Store),
    Remote(PathBuf),
}

impl Admin {
    pub fn open(dir: &Path) -> Result<Admin, String> {
        match Store::open(dir) {
            Ok(store) => Ok(Admin::Local(store)),
            Err(StoreError::Locked(db)) => {
                let sock = dir.join(SOCKET_FILE);
                if sock.exists() {
                    Ok(Admin::Remote(sock))
                } else {
                    Err(format!(
                        "{} is held by another process that has no admin socket at {}",
                        db.display(),
                        sock.display()
                    ))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn call(&self, req: &AdminRequest) -> Result<AdminReply, String> {
        let reply = match self {
            Admin::Local(store) => execute(store, req),
            Admin::Remote(sock) => {
                let talk = || -> std::io::Result<String> {
                    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
                    s.write_all(format!("{}\n", json::to_string(req)).as_bytes())?;
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line)?;
                    Ok(line)
                };
                let line = talk().map_err(|e| format!("cannot reach the running server at {}: {e}", sock.display()))?;
                json::from_str(line.trim()).map_err(|_| "the server sent a malformed admin reply".to_owned())?
            }
        };
        match reply.error {
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }
}
