//! Shared harness: start real `memgate` and `memgate-mock` processes and talk HTTP to them over
//! real sockets, as the SDKs do. A tiny blocking HTTP/1.1 client records when each chunk
//! arrives, so tests can tell a streamed answer from a buffered one.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MEMGATE: &str = env!("CARGO_BIN_EXE_memgate");
pub const MOCK: &str = env!("CARGO_BIN_EXE_memgate-mock");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "memgate-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `memgate-mock`.
pub struct Mock {
    child: Child,
    pub url: String,
}

impl Mock {
    pub fn start(dir: &str) -> Mock {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &str, extra: &[&str]) -> Mock {
        let mut child = Command::new(MOCK)
            .arg("--dir")
            .arg(repo().join(dir))
            .args(extra)
            .current_dir(repo())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start memgate-mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("http"), "mock did not start: {line:?}");
        Mock {
            child,
            url: line.trim().to_owned(),
        }
    }

    fn addr(&self) -> String {
        self.url.split("://").nth(1).unwrap().to_owned()
    }

    /// What the mock received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        let r = request(&self.addr(), "GET", "/__mock/requests", &[], b"");
        r.json().as_array().unwrap().clone()
    }

    pub fn clear(&self) {
        request(&self.addr(), "DELETE", "/__mock/requests", &[], b"");
    }

    /// The body of the last request the mock received, as JSON.
    pub fn last_body(&self) -> Value {
        let reqs = self.requests();
        let last = reqs.last().expect("the mock received no request");
        serde_json::from_str(last["body"].as_str().unwrap()).unwrap()
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        self.requests().last()?["headers"][name].as_str().map(str::to_owned)
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `memgate serve`, with its stderr collected.
pub struct Gateway {
    child: Child,
    pub addr: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    log: Arc<Mutex<String>>,
    /// Collects stderr; joined after the process ends so the log holds its last lines.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Starts memgate with `config` (TOML; `listen` and `data_dir` are added unless present).
    pub fn start(config: &str) -> Gateway {
        Self::start_in(&temp_dir("gw"), config, &[])
    }

    pub fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        let mut text = String::new();
        if !config.contains("listen") {
            text.push_str("listen = \"127.0.0.1:0\"\n");
        }
        if !config.contains("data_dir") {
            text.push_str(&format!("data_dir = {:?}\n", dir.join("data")));
        }
        text.push_str(config);
        let path = dir.join("memgate.toml");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(MEMGATE);
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start memgate");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("listening on http://") {
                    let addr = line[i + 20..].split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => panic!("memgate did not start: {}", log.lock().unwrap()),
        };
        Gateway {
            child,
            addr,
            dir: dir.to_owned(),
            config: path,
            log,
            reader: Some(reader),
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs a `memgate` CLI command against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(MEMGATE)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Creates a gateway key through the CLI (the running server's admin socket); returns it.
    pub fn create_key(&self, name: &str) -> String {
        let out = self.cli(&["keys", "create", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("msk_"))
            .expect("the CLI printed no key")
            .to_owned()
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        request(&self.addr, "POST", path, headers, body.to_string().as_bytes())
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(&self.addr, "GET", path, headers, b"")
    }

    /// The ids of the threads `headers` may list (open mode: every thread), oldest first.
    pub fn thread_ids(&self, headers: &[(&str, &str)]) -> Vec<String> {
        let list = self.get("/v1/memory/threads", headers).json();
        let threads = list["threads"].as_array().unwrap_or_else(|| panic!("{list}"));
        threads.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL): what a crash or power loss looks like to the database.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }

    /// How the process ended, if it does within `within`.
    pub fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_log();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        self.join_log();
        status
    }

    /// After the process ended: its exit closed the pipe, so the reader ends once it has
    /// logged the last line.
    fn join_log(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an OpenAI-shaped error with this status and type; returns the error object.
    pub fn expect_error(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let e = self.json()["error"].clone();
        assert_eq!(e["type"], kind, "{}", self.text());
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text());
        assert!(e.get("code").is_some(), "error without a code field: {}", self.text());
        e
    }
}

fn write_request(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_lowercase(), v.trim().to_owned()));
    }
    (status, headers)
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write_request(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    read_response(&mut r)
}

/// Reads one response (Content-Length or chunked) from a connection.
pub fn read_response(r: &mut impl BufRead) -> Resp {
    let (status, headers) = read_head(r);
    let mut out = Vec::new();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        while let Some(c) = read_chunk(r) {
            out.extend(c);
        }
    } else if let Some((_, n)) = headers.iter().find(|(k, _)| k == "content-length") {
        out.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut out).unwrap();
    }
    Resp {
        status,
        headers,
        body: out,
    }
}

fn read_chunk(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(line.trim(), 16).ok()?;
    let mut buf = vec![0u8; n + 2];
    r.read_exact(&mut buf).ok()?;
    buf.truncate(n);
    (n > 0).then_some(buf)
}

/// A streamed response read chunk by chunk as it arrives.
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    start: Instant,
}

impl Stream {
    pub fn open(addr: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> Stream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let start = Instant::now();
        write_request(&mut s, "POST", path, headers, body.to_string().as_bytes());
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        Stream {
            status,
            headers,
            reader,
            start,
        }
    }

    /// The next HTTP chunk and when it arrived (since the request was sent).
    pub fn next_chunk(&mut self) -> Option<(Duration, Vec<u8>)> {
        let c = read_chunk(&mut self.reader)?;
        Some((self.start.elapsed(), c))
    }

    /// All remaining SSE `data:` payloads with their arrival times.
    pub fn events(&mut self) -> Vec<(Duration, Option<String>, String)> {
        let mut out = Vec::new();
        while let Some((t, c)) = self.next_chunk() {
            for (event, data) in parse_sse(&String::from_utf8_lossy(&c)) {
                out.push((t, event, data));
            }
        }
        out
    }

    /// Closes the connection (a client giving up mid-stream).
    pub fn close(self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// Splits SSE text into `(event, data)` pairs.
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

/// A thread's observation record (`GET …/observations/record`).
pub fn record(gw: &Gateway, thread: &str) -> Value {
    let res = gw.get(&format!("/v1/memory/threads/{thread}/observations/record"), &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

/// Polls a thread's observation record until `done` holds (background runs are asynchronous).
pub fn wait_record(gw: &Gateway, thread: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = record(gw, thread);
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r}\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Config for a gateway in front of `mock` as provider `name` (kind openai).
pub fn provider(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-configured-{name}\"\n{extra}\n",
        mock.url
    )
}

/// Whether `python3` can import `module` (an SDK a test drives).
pub fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a test needing `what` (a host tool or SDK; `ready` says if it is there) must skip:
/// it says so and skips, except under CI, where a missing tool fails the test.
pub fn skip_without(ready: bool, what: &str) -> bool {
    if !ready {
        assert!(
            std::env::var("CI").is_err(),
            "{what} missing under CI (.ci/run installs it)"
        );
        eprintln!("skipped: {what} is not installed (see README, Quick start)");
    }
    !ready
}
