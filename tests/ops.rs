//! Running as a service: graceful shutdown, systemd's readiness protocol, config reload on
//! SIGHUP. Real `memgate` processes, real signals, real sockets.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

fn config(mock: &Mock, extra: &str) -> String {
    // Top-level keys first, then `extra` (tables), then the provider table.
    format!(
        "default_provider = \"openai\"\n{extra}\n{}",
        provider("openai", mock, "models = [\"gpt-4o-mini\"]\n")
    )
}

fn signal(gw: &Gateway, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(gw.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// Sends SIGTERM from another thread and hands back how the process ended and how long it took.
fn terminate_in_background(mut gw: Gateway) -> std::thread::JoinHandle<(Gateway, ExitStatus, Duration)> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let status = gw.terminate();
        (gw, status, start.elapsed())
    })
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "openai/gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

fn models(gw: &Gateway) -> Vec<String> {
    let res = gw.get("/v1/models", &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn wait_for(what: &str, gw: &Gateway, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {}", gw.log());
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn sigterm_lets_an_open_stream_finish_refuses_new_connections_and_keeps_the_exchange() {
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("drain");
    let text = config(&mock, "");
    let gw = Gateway::start_in(&dir, &text, &[]);
    let addr = gw.addr.clone();
    let memory = [("x-thread-id", "drain-thread"), ("x-resource-id", "drain-user")];
    let mut stream = Stream::open(
        &addr,
        "/v1/chat/completions",
        &memory,
        &chat_body("memgate-test: slow stream", true),
    );
    assert_eq!(stream.status, 200);
    stream.next_chunk().expect("the first event");

    let stopping = terminate_in_background(gw);
    std::thread::sleep(Duration::from_millis(300));
    let refused = TcpStream::connect(&addr);
    assert!(refused.is_err(), "a new connection was accepted during shutdown");

    let events = stream.events();
    assert_eq!(
        events.last().map(|e| e.2.as_str()),
        Some("[DONE]"),
        "the stream did not finish: {events:?}"
    );
    let (gw, status, took) = stopping.join().unwrap();
    let log = gw.log();
    assert!(status.success(), "exit status {status:?}: {log}");
    eprintln!("shutdown with a slow stream in flight took {} ms", took.as_millis());
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("1 request(s) in flight"),
        "{log}"
    );
    assert!(
        log.contains("1 request(s) finished") && log.contains("database closed"),
        "{log}"
    );
    drop(gw);

    let gw = Gateway::start_in(&dir, &text, &[]);
    let res = gw.get("/v1/memory/threads/drain-thread/messages", &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    let stored = res.json()["messages"].as_array().unwrap().clone();
    let roles: Vec<&str> = stored.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant"], "{stored:?}");
    assert!(
        stored[1]["content"].as_str().is_some_and(|c| !c.is_empty()),
        "{stored:?}"
    );
}

#[test]
fn an_idle_keep_alive_connection_does_not_delay_exit() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    let mut idle = TcpStream::connect(&gw.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).status, 200);

    let (gw, status, took) = terminate_in_background(gw).join().unwrap();
    assert!(status.success(), "exit status {status:?}: {}", gw.log());
    assert!(
        took < Duration::from_secs(1),
        "exit took {took:?} with an idle connection open"
    );
    let mut rest = String::new();
    assert_eq!(
        reader.read_line(&mut rest).unwrap(),
        0,
        "the idle connection was not closed"
    );
}

#[test]
fn shutdown_cuts_off_a_hanging_request_at_the_bound() {
    let mock = Mock::start("fixtures/openai");
    // The fixture answers after 3 s: well past the bound.
    let gw = Gateway::start(&config(&mock, "[timeouts]\nshutdown_ms = 800\n"));
    let addr = gw.addr.clone();
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = chat_body("memgate-test: hang", false).to_string();
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).map(|_| line)
    });
    wait_for("the request to reach the upstream", &gw, || !mock.requests().is_empty());

    let (gw, status, took) = terminate_in_background(gw).join().unwrap();
    let log = gw.log();
    eprintln!(
        "shutdown past a hanging upstream took {} ms (bound 800 ms)",
        took.as_millis()
    );
    assert!(status.success(), "exit status {status:?}: {log}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(800 + 1500),
        "exit took {took:?} for shutdown_ms = 800: {log}"
    );
    assert!(log.contains("cut off 1 request(s)"), "{log}");
    let answered = client.join().unwrap();
    assert!(
        answered.as_deref().map_or(true, str::is_empty),
        "the cut-off request got {answered:?}"
    );
}

/// Receives one notification (or panics after a while).
fn notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification from memgate");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sd_notify_says_ready_once_listening_and_stopping_on_sigterm() {
    use std::os::linux::net::SocketAddrExt;
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("notify");
    let path = dir.join("notify.sock");
    let abstract_name = format!("memgate-test-notify-{}", std::process::id());
    let cases = [
        (UnixDatagram::bind(&path).unwrap(), path.to_str().unwrap().to_owned()),
        (
            UnixDatagram::bind_addr(
                &std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap(),
            )
            .unwrap(),
            format!("@{abstract_name}"),
        ),
    ];
    for (socket, target) in cases {
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let gw = Gateway::start_in(
            &temp_dir("notify-gw"),
            &config(&mock, ""),
            &[("NOTIFY_SOCKET", &target)],
        );
        let ready = notification(&socket);
        assert!(ready.lines().any(|l| l == "READY=1"), "{target}: {ready:?}");
        assert!(
            TcpStream::connect(&gw.addr).is_ok(),
            "READY=1 came before the port accepts connections"
        );
        assert!(ready.contains("STATUS="), "{ready:?}");
        let (gw, status, _) = terminate_in_background(gw).join().unwrap();
        assert!(status.success(), "{}", gw.log());
        let stopping = notification(&socket);
        assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{target}: {stopping:?}");
    }
}

#[test]
fn sighup_reloads_providers_and_names_what_needs_a_restart() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    assert_eq!(models(&gw), ["openai/gpt-4o-mini"]);

    let old = std::fs::read_to_string(&gw.config).unwrap();
    let new = format!(
        "{}\n[memory]\nscope = \"resource\"\n{}",
        old.replace("127.0.0.1:0", "127.0.0.1:1"),
        provider("second", &mock, "models = [\"m2\"]\n")
    );
    std::fs::write(&gw.config, new).unwrap();
    signal(&gw, "HUP");
    wait_for("the reload", &gw, || gw.log().contains("reloaded config"));
    assert_eq!(models(&gw), ["openai/gpt-4o-mini", "second/m2"]);
    let res = gw.post("/v1/chat/completions", &[], &chat_body("Hello", false));
    assert_eq!(res.status, 200, "{}", res.text());
    let res = gw.post(
        "/v1/chat/completions",
        &[],
        &json!({"model": "second/m2", "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(res.status, 200, "the new provider does not route: {}", res.text());
    let log = gw.log();
    assert!(
        log.contains("listen, memory.scope changed; that takes a restart"),
        "{log}"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_running_one() {
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    let old = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(&gw.config, format!("{old}\nmodles = [\"typo\"]\n")).unwrap();
    signal(&gw, "HUP");
    wait_for("the failed reload", &gw, || gw.log().contains("config reload failed"));
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("config reload failed")).unwrap();
    assert!(
        line.contains(gw.config.to_str().unwrap()) && log.contains("modles"),
        "the error names neither file nor key: {log}"
    );
    assert_eq!(models(&gw), ["openai/gpt-4o-mini"]);
    let res = gw.post("/v1/chat/completions", &[], &chat_body("Hello", false));
    assert_eq!(res.status, 200, "{}", res.text());
}

/// The CLI's `keys list` through the running server's admin socket works.
fn cli_works(gw: &Gateway) {
    let out = gw.cli(&["keys", "list"]);
    assert!(
        out.status.success(),
        "the CLI failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
}

#[test]
fn admin_socket_drops_oversized_and_slow_requests_and_keeps_serving_the_cli() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    let sock = gw.dir.join("data").join("admin.sock");

    // A request line with no end: the server stops reading at its size cap and says why.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0usize;
    let started = Instant::now();
    // The server closes its end once over the cap, so a write eventually fails.
    while sent < (8 << 20) && big.write_all(&chunk).is_ok() {
        sent += chunk.len();
    }
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply);
    assert!(
        sent < (8 << 20) && reply.contains("too large"),
        "the server read {sent} bytes of one admin request and answered {reply:?}"
    );
    eprintln!(
        "oversized admin request cut off after {sent} bytes, {:?}",
        started.elapsed()
    );
    cli_works(&gw);

    // A client that connects and says nothing is disconnected after the read timeout.
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"{\"op\":").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    cli_works(&gw);
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(20),
        "a silent admin client was kept: {read:?} after {:?}",
        started.elapsed()
    );
    cli_works(&gw);
}

#[test]
fn start_tightens_an_open_data_dir_and_database_file() {
    use std::os::unix::fs::PermissionsExt;
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("perms");
    let text = config(&mock, "");
    let gw = Gateway::start_in(&dir, &text, &[]);
    drop(gw);
    let data = dir.join("data");
    let db = data.join("memgate.redb");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600), "a new install's modes");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let gw = Gateway::start_in(&dir, &text, &[]);
    assert_eq!(mode(&data), 0o700, "data_dir mode");
    assert_eq!(mode(&db), 0o600, "database mode");
    let log = gw.log();
    assert!(
        log.contains("0755") && log.contains("0644") && log.contains("0700") && log.contains("0600"),
        "the change was not logged: {log}"
    );
}

/// Every notification until one holding `until` (or panics after the socket's timeout).
fn notifications_until(socket: &UnixDatagram, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|n: &String| n.lines().any(|l| l.starts_with(until))) {
        seen.push(notification(socket));
    }
    seen
}

fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (socket, path.to_str().unwrap().to_owned())
}

#[test]
fn watchdog_pings_come_every_half_interval_and_only_for_our_pid() {
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("watchdog");
    let (socket, target) = notify_socket(&dir);
    let gw = Gateway::start_in(
        &temp_dir("watchdog-gw"),
        &config(&mock, ""),
        &[("NOTIFY_SOCKET", &target), ("WATCHDOG_USEC", "400000")],
    );
    notifications_until(&socket, "READY=1");
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        if notification(&socket).lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    // Every 200 ms over 1.5 s: about 7; generous bounds, this is not a timing test.
    assert!(
        (3..=15).contains(&pings),
        "{pings} WATCHDOG=1 in 1.5 s with WATCHDOG_USEC=400000"
    );
    drop(gw);

    // WATCHDOG_PID names another process: the watchdog is not ours to feed.
    let gw = Gateway::start_in(
        &temp_dir("watchdog-gw"),
        &config(&mock, ""),
        &[
            ("NOTIFY_SOCKET", &target),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    notifications_until(&socket, "READY=1");
    socket.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    let mut buf = [0u8; 256];
    let got = socket
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(got.is_err(), "pinged for another pid's watchdog: {got:?}: {}", gw.log());
}

#[test]
fn a_database_left_by_kill_9_is_repaired_with_more_start_time_asked_before_ready() {
    let mock = Mock::start("fixtures/openai");
    let dir = temp_dir("repair");
    let text = config(&mock, "");
    let gw = Gateway::start_in(&dir, &text, &[]);
    let res = gw.post(
        "/v1/memory/threads/repair-thread/messages",
        &[],
        &json!({"messages": [{"role": "user", "content": "kept"}]}),
    );
    assert_eq!(res.status, 404, "{}", res.text());
    let res = gw.post(
        "/v1/memory/threads",
        &[],
        &json!({"id": "repair-thread", "resourceId": "u"}),
    );
    assert_eq!(res.status, 201, "{}", res.text());
    gw.kill();

    let (socket, target) = notify_socket(&temp_dir("repair-notify"));
    let gw = Gateway::start_in(&dir, &text, &[("NOTIFY_SOCKET", &target)]);
    let seen = notifications_until(&socket, "READY=1");
    let extend = seen
        .iter()
        .position(|n| n.lines().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")));
    assert!(
        extend.is_some_and(|i| i + 1 < seen.len()),
        "no EXTEND_TIMEOUT_USEC before READY=1: {seen:?}: {}",
        gw.log()
    );
    assert!(gw.log().contains("repair"), "{}", gw.log());
    assert_eq!(gw.get("/v1/memory/threads/repair-thread", &[]).status, 200);
}

#[test]
fn a_provider_key_comes_from_a_systemd_credential() {
    let mock = Mock::start("fixtures/openai");
    let creds = temp_dir("credentials");
    std::fs::write(creds.join("MEMGATE_TEST_OPENAI_KEY"), "sk-from-credential\n").unwrap();
    let text = format!(
        "default_provider = \"openai\"\n[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         api_key_env = \"MEMGATE_TEST_OPENAI_KEY\"\nmodels = [\"gpt-4o-mini\"]\n",
        mock.url
    );
    let gw = Gateway::start_in(
        &temp_dir("credential-gw"),
        &text,
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    let res = gw.post("/v1/chat/completions", &[], &chat_body("Hello", false));
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        mock.last_header("authorization").as_deref(),
        Some("Bearer sk-from-credential")
    );
    assert!(!gw.log().contains("sk-from-credential"), "the key reached the log");
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn admin_accept_failures_back_off_instead_of_spinning() {
    use std::os::unix::net::UnixStream;
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    let sock = gw.dir.join("data").join("admin.sock");
    let status = Command::new("prlimit")
        .args(["--pid", &gw.pid().to_string(), "--nofile=64:64"])
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");
    // Silent clients use up the descriptors; the rest wait in the backlog, where every accept
    // fails with EMFILE until the read timeout closes some.
    let held: Vec<UnixStream> = (0..100).filter_map(|_| UnixStream::connect(&sock).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(gw.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(gw.pid()) - before;
    // A loop retrying at once burns a core (about 200 ticks in 2 s).
    assert!(
        used < 50,
        "{used} ticks of CPU in 2 s with accept failing: {}",
        gw.log()
    );
    assert!(gw.log().contains("accept failed"), "{}", gw.log());
    drop(held);
    cli_works(&gw);
}

#[test]
fn admin_socket_answers_no_other_user_even_when_its_modes_were_loosened_and_tightens_them() {
    use std::os::unix::fs::PermissionsExt;
    let python = "/usr/bin/python3";
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root || !std::path::Path::new(python).exists() || Command::new("setpriv").arg("--help").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "this test needs root, setpriv and {python} under CI"
        );
        eprintln!("skipped: needs root, setpriv and {python} to connect as another user");
        return;
    }
    let mock = Mock::start("fixtures/openai");
    let gw = Gateway::start(&config(&mock, ""));
    let data = gw.dir.join("data");
    let sock = data.join("admin.sock");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let client = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({:?})\ntry:\n\
         \x20   s.sendall(b'{{\"op\":\"keys.list\"}}\\n')\n    print(repr(s.recv(65536)))\n\
         except OSError:\n    print(\"closed\")\n",
        sock.to_str().unwrap()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            python,
            "-c",
            &client,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && matches!(said.trim(), "b''" | "closed"),
        "another user got {said:?} ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        gw.log().contains("refused a connection: ") && gw.log().contains("admin.sock was 0666"),
        "{}",
        gw.log()
    );
    // Tightened again, so the kernel itself now keeps others out, and our CLI still works.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&sock), mode(&data)), (0o600, 0o700));
    cli_works(&gw);
}
