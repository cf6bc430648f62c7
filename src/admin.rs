//! Key and thread management for the CLI, local or through the server.
//!
//! redb admits one process per database file. When the server runs it holds the file, so it
//! also listens on `data_dir/admin.sock` (mode 0600, inside the 0700 data_dir: only the service
//! user and root reach it) and the CLI sends its command there. When no server runs, the CLI
//! opens the file itself. Either way the same [`execute`] does the work.
//!
//! Protocol: one JSON request line, one JSON reply line, then the server closes. Thread
//! commands come back as text rendered by [`execute`], so the CLI prints the same whether it
//! opened the file or asked the server.

use crate::clock::iso8601;
use crate::memory;
use crate::store::{KeyRecord, Reader, Scope, Store, StoreError, StoredMessage, ThreadRecord};
use miniserde::{json, Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File name of the admin socket inside `data_dir`.
pub const SOCKET_FILE: &str = "admin.sock";

/// How long the CLI waits for a server that holds the database but is still opening its socket.
const STARTUP_WAIT: Duration = Duration::from_secs(3);

/// An admin operation: what the CLI asks for, and what [`execute`] carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    KeysCreate,
    KeysList,
    KeysRevoke,
    ThreadsList,
    ThreadsShow,
    ThreadsDelete,
    Forget,
    Usage,
}

impl Op {
    const ALL: [Op; 8] = [
        Op::KeysCreate,
        Op::KeysList,
        Op::KeysRevoke,
        Op::ThreadsList,
        Op::ThreadsShow,
        Op::ThreadsDelete,
        Op::Forget,
        Op::Usage,
    ];

    /// Its name on the wire ([`AdminRequest::op`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::KeysCreate => "keys.create",
            Op::KeysList => "keys.list",
            Op::KeysRevoke => "keys.revoke",
            Op::ThreadsList => "threads.list",
            Op::ThreadsShow => "threads.show",
            Op::ThreadsDelete => "threads.delete",
            Op::Forget => "forget",
            Op::Usage => "usage",
        }
    }

    /// The operation a wire name stands for; `None` for one this memgate does not know (a newer
    /// client's).
    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// How a server answers an op it does not know. A client tells it apart by its text, because
/// the servers that send it are older ones, which know no other way to say so.
const UNKNOWN_OP: &str = "unknown admin operation";

/// One command. Fields an op does not use are left out (older clients send only `op` and
/// `name`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AdminRequest {
    /// An [`Op`]'s name. A string rather than the enum, so that an op this server does not
    /// know still parses and is answered with [`UNKNOWN_OP`].
    pub op: String,
    /// The key name (`keys.create`, `keys.revoke`).
    pub name: Option<String>,
    /// The thread id (`threads.show`, `threads.delete`).
    pub id: Option<String>,
    /// Only this tenant (`threads.*`, `forget`, `usage`): a key name (its current key's tenant,
    /// see [`Reader::resolve_tenant`]), `default` for open mode, or a tenant id. All tenants when
    /// absent.
    pub tenant: Option<String>,
    /// Only this resource (`threads.list`); the resource to erase (`forget`).
    pub resource: Option<String>,
    /// `usage`: the range and grouping, as `GET /v1/usage` takes them.
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
    /// `keys.create`: the key's own limits.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl AdminRequest {
    /// A request for `op`, its other fields empty.
    pub(crate) fn new(op: Op) -> AdminRequest {
        AdminRequest {
            op: op.name().to_owned(),
            ..<AdminRequest as Default>::default()
        }
    }
}

/// Its Debug hides a new key.
#[derive(Default, Serialize, Deserialize)]
pub struct AdminReply {
    pub error: Option<String>,
    pub key: Option<String>,
    pub keys: Option<Vec<KeyRecord>>,
    /// What the thread commands print, rendered for a terminal.
    pub text: Option<String>,
}

impl std::fmt::Debug for AdminReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminReply")
            .field("error", &self.error)
            .field("key", &crate::config::Redacted(self.key.as_deref()))
            .field("keys", &self.keys)
            .field("text", &self.text)
            .finish()
    }
}

/// Carries out one admin request against the store.
pub fn execute(store: &Store, req: &AdminRequest) -> AdminReply {
    let name = || {
        req.name
            .as_deref()
            .ok_or_else(|| StoreError::Conflict(format!("{} needs a name", req.op)))
    };
    let Some(op) = Op::from_name(&req.op) else {
        return AdminReply {
            error: Some(format!("{UNKNOWN_OP} {:?}", req.op)),
            ..<AdminReply as Default>::default()
        };
    };
    let result = match op {
        Op::KeysCreate => name()
            .and_then(|n| store.create_key(n, req.rpm, req.tpm))
            .map(|k| AdminReply {
                key: Some(k),
                ..<AdminReply as Default>::default()
            }),
        Op::KeysList => store.list_keys().map(|k| AdminReply {
            keys: Some(k),
            ..<AdminReply as Default>::default()
        }),
        Op::KeysRevoke => name()
            .and_then(|n| store.revoke_key(n))
            .map(|()| <AdminReply as Default>::default()),
        Op::ThreadsList => list_threads(store, req.tenant.as_deref(), req.resource.as_deref()).map(text),
        Op::Usage => usage(store, req).map(text),
        Op::ThreadsShow => id(req)
            .and_then(|id| show_thread(store, req.tenant.as_deref(), id))
            .map(text),
        Op::ThreadsDelete => id(req)
            .and_then(|id| delete_thread(store, req.tenant.as_deref(), id))
            .map(text),
        Op::Forget => req
            .resource
            .as_deref()
            .ok_or_else(|| StoreError::Conflict("forget needs a resource".to_owned()))
            .and_then(|r| forget(store, req.tenant.as_deref(), r))
            .map(text),
    };
    result.unwrap_or_else(|e| AdminReply {
        error: Some(e.to_string()),
        ..<AdminReply as Default>::default()
    })
}

/// The usage table, all keys or `req.tenant`'s. A running server's last couple of seconds of
/// counts may not be written yet (see `usage`).
fn usage(store: &Store, req: &AdminRequest) -> Result<String, StoreError> {
    let reader = store.read()?;
    let q = crate::usage::Query::parse(
        req.from.as_deref(),
        req.to.as_deref(),
        req.group_by.as_deref(),
        tenant_id(&reader, req.tenant.as_deref())?,
    )
    .map_err(StoreError::Conflict)?;
    let rows = q.run(&reader)?;
    let dims: Vec<&str> = rows.first().map_or_else(
        || {
            let g = req.group_by.as_deref().filter(|g| !g.is_empty()).unwrap_or("key,model");
            g.split(',').map(str::trim).collect()
        },
        |(d, _)| d.iter().map(|(k, _)| *k).collect(),
    );
    Ok(crate::usage::to_text(&rows, &dims))
}

/// The tenant id a `--tenant` value names; a name nothing has stays as it is (and matches no data).
fn tenant_id(reader: &Reader, name: Option<&str>) -> Result<Option<String>, StoreError> {
    let Some(name) = name else { return Ok(None) };
    Ok(Some(reader.resolve_tenant(name)?.unwrap_or_else(|| name.to_owned())))
}

/// How a tenant is shown: its key's name (see [`Reader::tenant_labels`]), else its id.
fn label<'a>(labels: &'a std::collections::HashMap<String, String>, tenant: &'a str) -> &'a str {
    labels.get(tenant).map_or(tenant, String::as_str)
}

/// The thread `id` the admin means: of `tenant` if given, else the one thread of that id (an id
/// several tenants use needs `--tenant`).
fn find_thread(reader: &Reader, tenant: Option<&str>, id: &str) -> Result<ThreadRecord, StoreError> {
    if let Some(t) = tenant_id(reader, tenant)? {
        return reader.thread(&t, id)?.ok_or_else(|| no_thread(id));
    }
    let mut found = reader.threads_with_id(id)?;
    match found.len() {
        0 => Err(no_thread(id)),
        1 => Ok(found.remove(0)),
        n => {
            let labels = reader.tenant_labels()?;
            let whose: Vec<&str> = found.iter().map(|t| label(&labels, &t.tenant)).collect();
            Err(StoreError::Conflict(format!(
                "{n} tenants have a thread {id:?} ({}); add --tenant NAME",
                whose.join(", ")
            )))
        }
    }
}

fn text(t: String) -> AdminReply {
    AdminReply {
        text: Some(t),
        ..<AdminReply as Default>::default()
    }
}

fn id(req: &AdminRequest) -> Result<&str, StoreError> {
    req.id
        .as_deref()
        .ok_or_else(|| StoreError::Conflict(format!("{} needs a thread id", req.op)))
}

fn no_thread(id: &str) -> StoreError {
    StoreError::NotFound(format!(
        "no thread {id:?}; `memgate threads list` shows the threads there are"
    ))
}

/// A value on one line: control characters (newlines in a title) become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// `threads.list`: a table, oldest first.
fn list_threads(store: &Store, tenant: Option<&str>, resource: Option<&str>) -> Result<String, StoreError> {
    let reader = store.read()?;
    let threads = reader.threads(tenant_id(&reader, tenant)?.as_deref(), resource)?;
    let labels = reader.tenant_labels()?;
    if threads.is_empty() {
        let mut what = String::from("no threads");
        if let Some(r) = resource {
            let _ = write!(what, " of resource {r:?}");
        }
        if let Some(t) = tenant {
            let _ = write!(what, " of tenant {t:?}");
        }
        return Ok(what + "\n");
    }
    let header = ["ID", "TENANT", "RESOURCE", "MESSAGES", "CREATED", "UPDATED", "TITLE"].map(str::to_owned);
    let rows: Vec<[String; 7]> = threads
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                label(&labels, &t.tenant).to_owned(),
                t.resource.clone(),
                t.message_count.to_string(),
                iso8601(t.created_at),
                iso8601(t.updated_at),
                t.title.as_deref().map_or_else(|| "-".to_owned(), one_line),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "{}", plural(threads.len() as u64, "thread"));
    Ok(out)
}

/// Appends `[time] label: text`, continuation lines indented under the text.
fn entry(out: &mut String, at: u64, label: &str, text: &str, incomplete: bool) {
    let stamp = format!("[{}] ", iso8601(at));
    let mut lines = text.trim_end().lines();
    let _ = write!(out, "{stamp}{label}{}", lines.next().unwrap_or_default());
    for l in lines {
        let _ = write!(out, "\n{}{l}", " ".repeat(stamp.len()));
    }
    out.push_str(if incomplete { " (incomplete)\n" } else { "\n" });
}

fn render_message(out: &mut String, m: &StoredMessage) {
    let msg = &m.message;
    let text = crate::ir::content_text(&msg.content);
    let calls = msg.tool_calls.as_deref().unwrap_or_default();
    match (msg.role.as_str(), &msg.tool_call_id) {
        ("tool", Some(call)) => entry(out, m.created_at, &format!("tool ({call}): "), &text, m.incomplete),
        (role, _) => {
            if !text.is_empty() || calls.is_empty() {
                entry(
                    out,
                    m.created_at,
                    &format!("{role}: "),
                    &text,
                    m.incomplete && calls.is_empty(),
                );
            }
            for (i, c) in calls.iter().enumerate() {
                let label = format!("{role} → {}(", c.function.name);
                let args = format!("{})", c.function.arguments);
                entry(out, m.created_at, &label, &args, m.incomplete && i + 1 == calls.len());
            }
        }
    }
}

fn render_observations(out: &mut String, title: &str, store: &Reader, key: &str) -> Result<bool, StoreError> {
    let Some(r) = store.observations(key)? else {
        return Ok(false);
    };
    let history = store.history(key)?.len() as u64;
    let lines = memory::lines::lines(&r.text).len() as u64;
    let _ = writeln!(
        out,
        "\nobservations ({title}): generation {}, {}, {}, {} in history, updated {}",
        r.generation,
        plural(r.tokens, "token"),
        plural(lines, "line"),
        plural(history, "earlier generation"),
        iso8601(r.updated_at)
    );
    if let Some(task) = &r.current_task {
        let _ = writeln!(out, "current task: {}", one_line(task));
    }
    if r.text.trim().is_empty() {
        out.push_str("  (no observation lines)\n");
    }
    for l in r.text.trim_end().lines() {
        let _ = writeln!(out, "  {l}");
    }
    Ok(true)
}

/// `threads.show`: the thread, its messages, and the observations it reads.
fn show_thread(store: &Store, tenant: Option<&str>, id: &str) -> Result<String, StoreError> {
    let reader = store.read()?;
    let t = find_thread(&reader, tenant, id)?;
    let messages = reader.messages_from(&t, 0)?;
    let observed = messages.iter().filter(|m| m.seq < t.cursor).count() as u64;
    let mut out = String::new();
    let _ = writeln!(out, "thread    {}", t.id);
    // The id too: the handle (`--tenant t_…`) for a revoked key's tenant whose name was reused.
    let _ = writeln!(
        out,
        "tenant    {} ({})",
        label(&reader.tenant_labels()?, &t.tenant),
        t.tenant
    );
    let _ = writeln!(out, "resource  {}", t.resource);
    let _ = writeln!(
        out,
        "title     {}",
        t.title.as_deref().map_or_else(|| "-".to_owned(), one_line)
    );
    let _ = writeln!(out, "created   {}", iso8601(t.created_at));
    let _ = writeln!(out, "updated   {}", iso8601(t.updated_at));
    let _ = writeln!(
        out,
        "messages  {} stored, {observed} observed (cursor at seq {} of {})",
        t.message_count, t.cursor, t.next_seq
    );
    if messages.is_empty() {
        out.push_str("\nno messages\n");
    } else {
        out.push_str("\nmessages:\n");
        let mut marked = false;
        for m in &messages {
            if observed > 0 && !marked && m.seq >= t.cursor {
                out.push_str("-- not yet observed --\n");
                marked = true;
            }
            render_message(&mut out, m);
        }
    }
    let thread_scope = render_observations(
        &mut out,
        "thread scope",
        &reader,
        &Scope::Thread {
            tenant: &t.tenant,
            id: &t.id,
        }
        .key(),
    )?;
    let resource_key = Scope::Resource {
        tenant: &t.tenant,
        resource: &t.resource,
    }
    .key();
    let resource_scope = render_observations(&mut out, "resource scope", &reader, &resource_key)?;
    if !thread_scope && !resource_scope {
        out.push_str("\nno observations yet\n");
    }
    Ok(out)
}

fn describe(labels: &std::collections::HashMap<String, String>, t: &ThreadRecord) -> String {
    format!(
        "thread {:?} (tenant {:?}, resource {:?})",
        t.id,
        label(labels, &t.tenant),
        t.resource
    )
}

/// `threads.delete`: the thread, its messages and its thread-scope observations.
fn delete_thread(store: &Store, tenant: Option<&str>, id: &str) -> Result<String, StoreError> {
    let reader = store.read()?;
    let found = find_thread(&reader, tenant, id)?;
    let labels = reader.tenant_labels()?;
    drop(reader);
    let t = store
        .write_blocking(move |tx| memory::delete_thread_op(tx, &found.tenant, &found.id))
        .map_err(|e| match e {
            StoreError::NotFound(_) => no_thread(id),
            other => other,
        })?;
    Ok(format!(
        "deleted {} with its {} and its observations\n",
        describe(&labels, &t),
        plural(t.message_count, "message")
    ))
}

/// `forget`: every thread of the resource, their messages and observations.
fn forget(store: &Store, tenant: Option<&str>, resource: &str) -> Result<String, StoreError> {
    let reader = store.read()?;
    let (id, labels) = (tenant_id(&reader, tenant)?, reader.tenant_labels()?);
    drop(reader);
    let mut gone = store.write_blocking(memory::forget_resource(id, resource.to_owned()))?;
    gone.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let messages: u64 = gone.iter().map(|t| t.message_count).sum();
    let whose = tenant.map_or_else(|| "all tenants".to_owned(), |t| format!("tenant {t:?}"));
    let mut out = format!(
        "forgot resource {resource:?} ({whose}): erased {}, {} and their observations\n",
        plural(gone.len() as u64, "thread"),
        plural(messages, "message")
    );
    for t in &gone {
        let _ = writeln!(out, "  {}", describe(&labels, t));
    }
    Ok(out)
}

/// Binds `data_dir/admin.sock` (0600). The server binds it before it says it is listening, so
/// a CLI command run right after start-up finds it.
pub fn bind(dir: &Path) -> std::io::Result<smol::net::unix::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET_FILE);
    // Only the holder of the database lock gets here, so a socket file left is stale.
    let _ = std::fs::remove_file(&path);
    let listener = smol::net::unix::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Longest admin request line; real ones are a few hundred bytes.
const MAX_REQUEST: usize = 64 << 10;
/// How long a client may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff after a failed accept (out of file descriptors), doubling up to the second.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves admin requests on a socket from [`bind`] until the process ends.
///
/// Who may connect: the kernel lets a process connect to a unix socket only with write
/// permission on its file, and the file is 0600 in the 0700 data_dir, so only our user and
/// root can. Before each connection is served the modes are checked again: if anything
/// loosened them, the connection (which may come from anyone) is refused and the modes are
/// tightened. (Asking the kernel for the peer's uid, SO_PEERCRED, needs `unsafe` here: std's
/// `peer_cred` is unstable, and rustix's wrapper stores a peer's pid in a non-zero type while
/// the kernel reports 0 for a peer in another PID namespace.)
pub async fn listen(listener: smol::net::unix::UnixListener, store: Store) {
    let socket = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(e) => {
                // EMFILE and kin stay true until something closes: retrying at once would spin.
                log::warn!(
                    "admin socket: accept failed ({e}); retrying in {} ms",
                    backoff.as_millis()
                );
                smol::Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        if let Err(why) = socket.as_deref().map_or(Ok(()), still_private) {
            log::warn!("admin socket: refused a connection: {why}; modes tightened again");
            continue;
        }
        let store = store.clone();
        crate::runtime::spawn(serve_one(stream, store)).detach();
    }
}

/// Whether the socket file is still 0600 and its directory 0700; if not, tightens them and
/// says what was found.
fn still_private(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut loose = Vec::new();
    for (path, mode) in [(Some(socket), 0o600), (socket.parent(), 0o700)] {
        let Some(path) = path else { continue };
        let found = std::fs::symlink_metadata(path).map_err(|e| format!("cannot check {}: {e}", path.display()))?;
        let found = found.permissions().mode() & 0o777;
        if found & !mode != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
            loose.push(format!("{} was {found:04o}", path.display()));
        }
    }
    if loose.is_empty() {
        Ok(())
    } else {
        Err(loose.join(", "))
    }
}

/// One request line (bounded in size and time), one reply line.
async fn serve_one(stream: smol::net::unix::UnixStream, store: Store) {
    use futures_lite::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut line = Vec::new();
    let mut reader = futures_lite::io::BufReader::new(stream.clone()).take(MAX_REQUEST as u64 + 1);
    let read = async { Some(reader.read_until(b'\n', &mut line).await) };
    let timeout = async {
        smol::Timer::after(READ_TIMEOUT).await;
        None
    };
    let refuse = |why: String| AdminReply {
        error: Some(why),
        ..<AdminReply as Default>::default()
    };
    let reply = match futures_lite::future::or(read, timeout).await {
        None => refuse(format!("no request line within {} s", READ_TIMEOUT.as_secs())),
        Some(Err(_)) => return,
        Some(Ok(_)) if line.len() > MAX_REQUEST => {
            refuse(format!("admin request too large (over {MAX_REQUEST} bytes)"))
        }
        Some(Ok(_)) => match std::str::from_utf8(&line)
            .ok()
            .and_then(|l| json::from_str::<AdminRequest>(l.trim()).ok())
        {
            Some(req) => smol::unblock(move || execute(&store, &req)).await,
            None => refuse("malformed admin request".to_owned()),
        },
    };
    let mut out = json::to_string(&reply);
    out.push('\n');
    let mut stream = stream;
    let _ = stream.write_all(out.as_bytes()).await;
    // Closing with unread input would reset the connection before the client reads the reply.
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The CLI's way to the data: the file itself, or the running server's socket.
pub enum Admin {
    Local(Store),
    Remote(PathBuf),
}

impl Admin {
    pub fn open(dir: &Path) -> Result<Admin, String> {
        match Store::open_reporting(dir, crate::notify::extend_timeout) {
            Ok(store) => Ok(Admin::Local(store)),
            Err(StoreError::Locked(db)) => {
                let sock = dir.join(SOCKET_FILE);
                // A server that is starting holds the file a moment before its socket exists.
                let deadline = Instant::now() + STARTUP_WAIT;
                while !sock.exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if sock.exists() {
                    Ok(Admin::Remote(sock))
                } else {
                    Err(format!(
                        "{} is held by another process that has no admin socket at {}; stop that process and \
                         run the command again",
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
                    let mut s = connect(sock)?;
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
            Some(e) if e.starts_with(UNKNOWN_OP) && matches!(self, Admin::Remote(_)) => Err(format!(
                "{e}: the running server is an older memgate; restart it to use this command"
            )),
            Some(e) => Err(e),
            None => Ok(reply),
        }
    }
}

/// Connects to the admin socket, waiting out a server that is still binding it.
fn connect(sock: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::io::ErrorKind::{ConnectionRefused, NotFound};
    let deadline = Instant::now() + STARTUP_WAIT;
    loop {
        match std::os::unix::net::UnixStream::connect(sock) {
            Err(e) if matches!(e.kind(), ConnectionRefused | NotFound) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{observations, threads, Generation, NewMessage, ObservationRecord};
    use serde_json::json;
    use serde_json::Value;

    const AT: u64 = 1_795_357_805_123; // 2026-11-22T14:30:05.123Z

    fn new(m: Value, incomplete: bool) -> NewMessage {
        NewMessage {
            message: serde_json::from_value(m).unwrap(),
            tokens: 5,
            incomplete,
            created_at: None,
        }
    }

    fn store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("memgate-admin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&dir).unwrap()
    }

    #[test]
    fn show_renders_messages_tools_and_both_observation_scopes() {
        let store = store("show");
        store.create_key("acme", None, None).unwrap();
        store
            .write_blocking(|tx| {
                let mut t = threads::bind(tx, "t9", "acme", "u1", AT)?;
                let msgs = vec![
                    new(
                        json!({"role": "user", "content": "Weather in Paris?\nAnd Rome?"}),
                        false,
                    ),
                    new(
                        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                        false,
                    ),
                    new(
                        json!({"role": "tool", "tool_call_id": "call_1", "content": "18°C"}),
                        false,
                    ),
                    new(
                        json!({"role": "assistant", "content": [{"type": "text", "text": "It is 18"}]}),
                        true,
                    ),
                ];
                threads::append(tx, &mut t, msgs, AT)?;
                t.cursor = 2;
                t.title = Some("Trip\nplanning".to_owned());
                threads::update(tx, &t)?;
                let thread_key = Scope::Thread {
                    tenant: "acme",
                    id: "t9",
                }
                .key();
                let record = ObservationRecord {
                    text: "Date: Nov 22, 2026\n* 🔴 (14:30) User asked about Paris weather".to_owned(),
                    tokens: 12,
                    current_task: Some("Plan the trip".to_owned()),
                    generation: 1,
                    ..ObservationRecord::default()
                };
                observations::put(tx, &thread_key, &record)?;
                let old = Generation {
                    generation: 0,
                    text: "old".to_owned(),
                    tokens: 1,
                    created_at: AT,
                    replaced_at: AT,
                };
                observations::archive(tx, &thread_key, &old)?;
                let shared = ObservationRecord {
                    text: "Date: Nov 22, 2026\n* 🟡 (14:31) User lives in Lyon".to_owned(),
                    tokens: 9,
                    ..ObservationRecord::default()
                };
                observations::put(
                    tx,
                    &Scope::Resource {
                        tenant: "acme",
                        resource: "u1",
                    }
                    .key(),
                    &shared,
                )
            })
            .unwrap();
        let show = show_thread(&store, None, "t9").unwrap();
        let stamp = "[2026-11-22T14:30:05.123Z] ";
        for want in [
            "thread    t9\ntenant    acme (acme)\nresource  u1\ntitle     Trip planning\n",
            "created   2026-11-22T14:30:05.123Z\n",
            "messages  4 stored, 2 observed (cursor at seq 2 of 4)\n",
            &format!("{stamp}user: Weather in Paris?\n{}And Rome?\n", " ".repeat(stamp.len())),
            &format!("{stamp}assistant → get_weather({{\"city\":\"Paris\"}})\n-- not yet observed --\n"),
            &format!("{stamp}tool (call_1): 18°C\n"),
            &format!("{stamp}assistant: It is 18 (incomplete)\n"),
            "observations (thread scope): generation 1, 12 tokens, 1 line, 1 earlier generation in history",
            "current task: Plan the trip\n  Date: Nov 22, 2026\n  * 🔴 (14:30) User asked about Paris weather\n",
            "observations (resource scope): generation 0, 9 tokens, 1 line, 0 earlier generations in history",
            "  * 🟡 (14:31) User lives in Lyon\n",
        ] {
            assert!(show.contains(want), "missing {want:?} in:\n{show}");
        }
        assert!(!show.contains("no observations"), "{show}");

        let list = list_threads(&store, None, None).unwrap();
        let mut lines = list.lines();
        assert_eq!(
            lines.next().unwrap(),
            "ID  TENANT  RESOURCE  MESSAGES  CREATED                   UPDATED                   TITLE"
        );
        assert_eq!(
            lines.next().unwrap(),
            "t9  acme    u1        4         2026-11-22T14:30:05.123Z  2026-11-22T14:30:05.123Z  Trip planning"
        );
        assert_eq!(lines.next().unwrap(), "1 thread");
        assert_eq!(
            list_threads(&store, Some("x"), Some("u1")).unwrap(),
            "no threads of resource \"u1\" of tenant \"x\"\n"
        );

        let reply = execute(
            &store,
            &AdminRequest {
                op: "threads.delete".to_owned(),
                id: Some("t9".to_owned()),
                ..<AdminRequest as Default>::default()
            },
        );
        assert!(reply.text.unwrap().contains("4 messages"));
        let reply = execute(
            &store,
            &AdminRequest {
                op: "threads.show".to_owned(),
                id: Some("t9".to_owned()),
                ..<AdminRequest as Default>::default()
            },
        );
        assert!(reply.error.unwrap().starts_with("no thread \"t9\""));
        // The resource's shared observations outlive a deleted thread; forget erases them.
        assert!(store
            .read()
            .unwrap()
            .observations(
                &Scope::Thread {
                    tenant: "acme",
                    id: "t9",
                }
                .key()
            )
            .unwrap()
            .is_none());
        let key = Scope::Resource {
            tenant: "acme",
            resource: "u1",
        }
        .key();
        assert!(store.read().unwrap().observations(&key).unwrap().is_some());
        assert!(forget(&store, None, "u1").unwrap().contains("erased 0 threads"));
        assert!(store.read().unwrap().observations(&key).unwrap().is_none());
    }

    #[test]
    fn old_requests_without_the_new_fields_still_parse() {
        let req: AdminRequest = json::from_str(r#"{"op":"keys.list","name":null}"#).unwrap();
        assert_eq!(req.op, "keys.list");
        assert!(req.id.is_none() && req.tenant.is_none() && req.resource.is_none());
        let reply: AdminReply = json::from_str(r#"{"error":null,"key":"msk_x","keys":null}"#).unwrap();
        assert!(reply.text.is_none());
    }
}
