//! The command line: `serve`, `check-config`, `keys`, `threads`, `forget`, `usage`, `eval`.
//!
//! Exit codes: 0 done, 1 the command failed (the reason on one stderr line), 2 bad usage.

use crate::admin::{Admin, AdminRequest, Op};
use crate::config::{Config, Source};
use crate::reload::ConfigFile;
use std::io::Write;
use std::path::PathBuf;

const HELP: &str = "memgate: a self-hosted LLM gateway with observational memory

Usage:
  memgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]
  memgate check-config [--config FILE]
  memgate keys create NAME [--rpm N] [--tpm N] [--config FILE] [--data-dir DIR]
  memgate keys list [--config FILE] [--data-dir DIR]
  memgate keys revoke NAME [--config FILE] [--data-dir DIR]
  memgate threads list [--resource R] [--tenant T] [--config FILE] [--data-dir DIR]
  memgate threads show ID [--config FILE] [--data-dir DIR]
  memgate threads delete ID [--config FILE] [--data-dir DIR]
  memgate forget --resource R [--tenant T] [--config FILE] [--data-dir DIR]
  memgate usage [--from T] [--to T] [--group-by D,…] [--tenant K] [--config FILE] [--data-dir DIR]
  memgate eval longmemeval --data FILE --model P/M --judge P/M [--limit N] [--concurrency N]
                           [--out FILE] [--config FILE | --url URL [--key msk_…]]
  memgate --version

`memgate COMMAND --help` says more about a command. keys, threads, forget and usage work
whether or not the server is running (through its admin socket when it is).

Config: --config FILE, else $MEMGATE_CONFIG, else /etc/memgate/memgate.toml if it exists,
else built-in defaults (providers from OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY and a
local Ollama). Logs go to stderr; RUST_LOG=debug for more.
";

const SERVE_HELP: &str = "memgate serve: run the gateway

Usage: memgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]

  --config FILE    memgate.toml to use
  --listen ADDR    address to bind, overriding `listen` (default 127.0.0.1:4000)
  --data-dir DIR   where memgate.redb lives, overriding `data_dir`

Signals: SIGHUP reloads the config file (providers and connection timeouts change at once; the
log names any setting that needs a restart). SIGTERM or SIGINT stops accepting and lets requests
in flight finish for up to [timeouts] shutdown_ms (20 s); a second one stops at once.
";

const CHECK_HELP: &str = "memgate check-config: validate the config and print it, secrets masked

Usage: memgate check-config [--config FILE]
Exits 1 with the reason when the config is invalid.
";

const KEYS_HELP: &str = "memgate keys: manage gateway keys (msk_…)

Usage:
  memgate keys create NAME [--rpm N] [--tpm N]
                             print a new key on stdout (shown only this once); --rpm and --tpm
                             limit its requests and tokens per minute (else [limits] applies)
  memgate keys list          list keys (names, hints, dates; never the keys)
  memgate keys revoke NAME   stop a key from working
Options: --config FILE, --data-dir DIR. Works whether or not the server is running.
";

const THREADS_HELP: &str = "memgate threads: look at and delete memory threads (all tenants)

Usage:
  memgate threads list [--resource R] [--tenant T]
        a table of threads, oldest first: id, tenant, resource, messages, created, updated, title
  memgate threads show ID [--tenant T]
        the thread, its messages in order, and its observations (thread and resource scope)
  memgate threads delete ID [--tenant T]
        delete the thread with its messages and thread-scope observations
T is a key name (the tenant of the key that has the name now, or had it last), `default` for
open mode, or a tenant id (`threads show` prints it; the handle for a revoked key's threads once a
new key has its name). Each key is its own tenant: a thread id used under two keys is two threads,
and `show`/`delete` then need --tenant.
Options: --config FILE, --data-dir DIR. Works whether or not the server is running.
";

const FORGET_HELP: &str = "memgate forget: erase everything memory holds about a resource

Usage: memgate forget --resource R [--tenant T]

Deletes every thread of resource R, their messages and observations, and the resource's shared
observations, for every tenant, or only tenant T (a gateway key's name: the key that has the
name now, or had it last; `default` for open mode; or a tenant id).
Options: --config FILE, --data-dir DIR. Works whether or not the server is running.
";

const USAGE_HELP: &str = "memgate usage: requests and tokens counted, per key, provider, model…

Usage: memgate usage [--from T] [--to T] [--group-by D,…] [--tenant K]

T is epoch seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (default: all time). D is key,
provider, model, user, tags, hour or day (default: key,model). --tenant K shows key K only (the
key that has the name now; a revoked key whose name was reused shows as `K(revoked)`).
memory_tokens are what memory's observer and reflector spent. Counts reach the database every
2 s, so a running server's last seconds may show on the next call.
Options: --config FILE, --data-dir DIR. Works whether or not the server is running.
";

const EVAL_HELP: &str = "memgate eval: benchmark memory against LongMemEval

Usage: memgate eval longmemeval --data FILE --model P/M --judge P/M [options]

  --data FILE        LongMemEval JSON (longmemeval_s_cleaned.json, …; see the README)
  --model P/M        the model that answers, as routed by the gateway (openai/gpt-4o)
  --judge P/M        the model that grades the answers (LongMemEval grades with gpt-4o)
  --limit N          only the first N questions of the file
  --concurrency N    questions in flight at once (default 4)
  --out FILE         results, one JSON line per question (default longmemeval-results.jsonl);
                     a run finds the questions already in it and skips them (resume)
  --config FILE      memgate.toml for the gateway started in process (default: as `serve`)
  --url URL          use a running gateway instead (http://127.0.0.1:4000); its memory gets
                     a thread per question, deleted once graded
  --key msk_…        the gateway key for --url (or $MEMGATE_KEY)

Without --url the command starts a gateway in process on 127.0.0.1 at a free port, with the
providers of the config and a temporary database (your memory is never touched), and speaks
HTTP to it. Each question gets one thread: its sessions are imported in date order through
the Memory API with their dates, the observer and reflector catch up after each session, the
question is asked through /v1/chat/completions with only the question as the new message, and
the judge grades the answer with LongMemEval's prompts. Progress and ETA go to stderr;
accuracy per question type and tokens (memory's apart) to stdout. Ctrl-C stops; run the same
command again to go on. Exits 1 if any question failed (it is not written, so a rerun retries).
";

/// Options shared by the subcommands.
#[derive(Debug, Default)]
struct Opts {
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    resource: Option<String>,
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    rpm: Option<String>,
    tpm: Option<String>,
    help: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            o.positional.extend(it.by_ref().cloned());
            break;
        }
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match a.split_once('=') {
            Some((k, v)) if a.starts_with("--") => (k, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value; see `memgate --help`"))
        };
        match flag {
            "--config" | "-c" => o.config = Some(value()?.into()),
            "--listen" => o.listen = Some(value()?),
            "--data-dir" => o.data_dir = Some(value()?.into()),
            "--resource" => o.resource = Some(value()?),
            "--tenant" => o.tenant = Some(value()?),
            "--from" => o.from = Some(value()?),
            "--to" => o.to = Some(value()?),
            "--group-by" => o.group_by = Some(value()?),
            "--rpm" => o.rpm = Some(value()?),
            "--tpm" => o.tpm = Some(value()?),
            "--help" | "-h" if inline.is_none() => o.help = true,
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}; see `memgate --help`")),
            _ => o.positional.push(a.clone()),
        }
    }
    Ok(o)
}

impl Opts {
    fn load(&self) -> Result<(Config, Source), String> {
        let (mut config, source) = Config::locate(self.config.as_deref())?;
        self.apply(&mut config)?;
        Ok((config, source))
    }

    /// Puts `--listen` and `--data-dir` over the file's settings.
    fn apply(&self, config: &mut Config) -> Result<(), String> {
        if let Some(l) = &self.listen {
            config.listen = Some(l.clone());
            config.listen_addr()?;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = Some(d.clone());
        }
        Ok(())
    }
}

fn out(text: &str) {
    // stdout may be a closed pipe; println! would panic there.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Fail {
    /// The command line itself is wrong (exit 2).
    Usage(String),
    /// The command ran and failed (exit 1).
    Failed(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail::Failed(e)
    }
}

fn usage<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Usage(msg.into()))
}

/// What a command line asks for, parsed and checked before anything runs.
enum Command {
    /// Text for stdout (help, the version).
    Print(String),
    Serve(Opts),
    CheckConfig(Opts),
    /// An admin operation, on the file itself or through the running server's socket.
    Admin {
        opts: Opts,
        op: Op,
        req: Box<AdminRequest>,
    },
    Eval(crate::eval::Options),
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let (msg, code) = match command(&args).and_then(run) {
        Ok(()) => return 0,
        Err(Fail::Failed(e)) => (e, 1),
        Err(Fail::Usage(e)) => (e, 2),
    };
    let _ = writeln!(std::io::stderr(), "memgate: {msg}");
    code
}

fn command(args: &[String]) -> Result<Command, Fail> {
    let print = |text: &str| Ok(Command::Print(text.to_owned()));
    let Some(cmd) = args.first() else {
        return print(HELP);
    };
    if cmd == "eval" {
        return eval(&args[1..]);
    }
    let opts = parse(&args[1..]).map_err(Fail::Usage)?;
    if !opts.help && !matches!(cmd.as_str(), "threads" | "forget") {
        no_filters(&opts, cmd, cmd)?;
    }
    match cmd.as_str() {
        "--version" | "-V" | "version" => Ok(Command::Print(format!("memgate {}\n", env!("CARGO_PKG_VERSION")))),
        "--help" | "-h" | "help" => print(HELP),
        "serve" if opts.help => print(SERVE_HELP),
        "serve" => {
            no_positional(&opts, "serve")?;
            Ok(Command::Serve(opts))
        }
        "check-config" if opts.help => print(CHECK_HELP),
        "check-config" => {
            no_positional(&opts, "check-config")?;
            Ok(Command::CheckConfig(opts))
        }
        "keys" if opts.help => print(KEYS_HELP),
        "keys" => keys(opts),
        "threads" if opts.help => print(THREADS_HELP),
        "threads" => threads(opts),
        "forget" if opts.help => print(FORGET_HELP),
        "forget" => forget(opts),
        "usage" if opts.help => print(USAGE_HELP),
        "usage" => {
            no_positional(&opts, "usage")?;
            let req = AdminRequest {
                tenant: opts.tenant.clone(),
                from: opts.from.clone(),
                to: opts.to.clone(),
                group_by: opts.group_by.clone(),
                ..AdminRequest::new(Op::Usage)
            };
            Ok(admin(opts, Op::Usage, req))
        }
        other => usage(format!("unknown command {other:?}; see `memgate --help`")),
    }
}

fn run(cmd: Command) -> Result<(), Fail> {
    match cmd {
        Command::Print(text) => out(&text),
        Command::Serve(opts) => {
            let (config, source) = opts.load()?;
            // SIGHUP reads the same file again, with the same command-line overrides.
            let file = match source {
                Source::File(path) => {
                    log::info!("config: {}", path.display());
                    Some(ConfigFile {
                        path,
                        overrides: Box::new(move |c| opts.apply(c)),
                    })
                }
                Source::Defaults => None,
            };
            crate::serve::run(config, file)?;
        }
        Command::CheckConfig(opts) => {
            let (config, source) = opts.load()?;
            // Providers are built as `serve` builds them, so a replay dir that does not load fails here too.
            crate::router::Router::new(&config)?;
            let from = match source {
                Source::File(p) => p.display().to_string(),
                Source::Defaults => "built-in defaults".to_owned(),
            };
            out(&format!(
                "# memgate config OK (from {from})\n{}",
                config.to_masked_toml()
            ));
        }
        Command::Admin { opts, op, req } => call(&opts, op, &req)?,
        Command::Eval(options) => {
            // The per-request log would bury the progress line; RUST_LOG brings it back.
            if std::env::var_os("RUST_LOG").is_none() {
                log::set_max_level(log::LevelFilter::Warn);
            }
            crate::eval::run(options)?;
        }
    }
    Ok(())
}

fn admin(opts: Opts, op: Op, req: AdminRequest) -> Command {
    Command::Admin {
        opts,
        op,
        req: Box::new(req),
    }
}

fn no_positional(opts: &Opts, cmd: &str) -> Result<(), Fail> {
    match opts.positional.first() {
        Some(p) => usage(format!(
            "unexpected argument {p:?} to {cmd}; see `memgate {cmd} --help`"
        )),
        None => Ok(()),
    }
}

/// A usage error when `--resource` or `--tenant` was given to a command (`what`) that does not
/// take them.
fn no_filters(opts: &Opts, what: &str, help: &str) -> Result<(), Fail> {
    for (flag, given) in [
        ("--resource", opts.resource.is_some()),
        ("--tenant", opts.tenant.is_some()),
    ] {
        if given {
            return usage(format!("{what} does not take {flag}; see `memgate {help} --help`"));
        }
    }
    Ok(())
}

/// Sends an admin request (to the file, or to the running server) and prints its answer.
fn call(opts: &Opts, op: Op, req: &AdminRequest) -> Result<(), Fail> {
    let (config, _) = opts.load()?;
    let admin = Admin::open(&config.data_dir())?;
    let reply = admin.call(req)?;
    match op {
        Op::KeysCreate => out(&format!("{}\n", reply.key.unwrap_or_default())),
        Op::KeysRevoke => {
            let _ = writeln!(
                std::io::stderr(),
                "revoked key {:?}",
                req.name.as_deref().unwrap_or_default()
            );
        }
        Op::KeysList => {
            let mut text = String::from("NAME\tHINT\tCREATED\tSTATUS\tRPM\tTPM\n");
            let limit = |l: Option<u64>| l.map_or("-".to_owned(), |n| n.to_string());
            for k in reply.keys.unwrap_or_default() {
                let status = k.revoked_at.map_or("active".to_owned(), |t| format!("revoked@{t}"));
                text.push_str(&format!(
                    "{}\t{}…\t{}\t{}\t{}\t{}\n",
                    k.name,
                    k.hint,
                    k.created_at,
                    status,
                    limit(k.rpm),
                    limit(k.tpm)
                ));
            }
            out(&text);
        }
        // The thread commands, `forget` and `usage`: text the store side rendered.
        Op::ThreadsList | Op::ThreadsShow | Op::ThreadsDelete | Op::Forget | Op::Usage => {
            out(&reply.text.unwrap_or_default());
        }
    }
    Ok(())
}

fn threads(opts: Opts) -> Result<Command, Fail> {
    let sub = opts.positional.first().map(String::as_str);
    let id = opts.positional.get(1).cloned();
    let extra = opts.positional.get(2);
    let (op, req) = match (sub, &id, extra) {
        (Some("list"), None, None) => (
            Op::ThreadsList,
            AdminRequest {
                tenant: opts.tenant.clone(),
                resource: opts.resource.clone(),
                ..AdminRequest::new(Op::ThreadsList)
            },
        ),
        (Some(s @ ("show" | "delete")), Some(_), None) => {
            if opts.resource.is_some() {
                return usage(format!(
                    "threads {s} does not take --resource; see `memgate threads --help`"
                ));
            }
            let op = if s == "show" {
                Op::ThreadsShow
            } else {
                Op::ThreadsDelete
            };
            let req = AdminRequest {
                id,
                tenant: opts.tenant.clone(),
                ..AdminRequest::new(op)
            };
            (op, req)
        }
        (Some("show" | "delete"), None, _) => {
            return usage(format!(
                "threads {} needs a thread id; `memgate threads list` shows them",
                sub.unwrap_or_default()
            ))
        }
        (Some("list" | "show" | "delete"), _, _) => {
            let p = extra.or(id.as_ref()).cloned().unwrap_or_default();
            return usage(format!(
                "unexpected argument {p:?} to threads {}; see `memgate threads --help`",
                sub.unwrap_or_default()
            ));
        }
        (Some(other), _, _) => {
            return usage(format!(
                "unknown threads command {other:?}; use list, show ID or delete ID (see `memgate threads --help`)"
            ))
        }
        (None, _, _) => return usage("threads needs list, show ID or delete ID; see `memgate threads --help`"),
    };
    for (flag, v) in [("--resource", &opts.resource), ("--tenant", &opts.tenant)] {
        if v.as_deref().is_some_and(str::is_empty) {
            return usage(format!("{flag} needs a non-empty value"));
        }
    }
    Ok(admin(opts, op, req))
}

fn forget(opts: Opts) -> Result<Command, Fail> {
    no_positional(&opts, "forget")?;
    let resource = match opts.resource.as_deref() {
        Some(r) if !r.is_empty() => r.to_owned(),
        _ => {
            return usage("forget needs --resource R, the resource whose memory to erase; see `memgate forget --help`")
        }
    };
    if opts.tenant.as_deref() == Some("") {
        return usage("--tenant needs a non-empty value; leave it out to forget the resource for every tenant");
    }
    let req = AdminRequest {
        tenant: opts.tenant.clone(),
        resource: Some(resource),
        ..AdminRequest::new(Op::Forget)
    };
    Ok(admin(opts, Op::Forget, req))
}

fn keys(opts: Opts) -> Result<Command, Fail> {
    let sub = opts.positional.first().map(String::as_str);
    let name = opts.positional.get(1).cloned();
    let op = match (sub, &name, opts.positional.len()) {
        (Some("create"), Some(_), 2) => Op::KeysCreate,
        (Some("revoke"), Some(_), 2) => Op::KeysRevoke,
        (Some("list"), None, 1) => Op::KeysList,
        _ => return usage("usage: memgate keys create NAME | list | revoke NAME; see `memgate keys --help`"),
    };
    let limit = |flag: &str, v: &Option<String>| -> Result<Option<u64>, Fail> {
        match v {
            None => Ok(None),
            Some(_) if op != Op::KeysCreate => usage(format!("{flag} goes with `memgate keys create`")),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => usage(format!("{flag} needs a positive whole number, not {v:?}")),
            },
        }
    };
    let (rpm, tpm) = (limit("--rpm", &opts.rpm)?, limit("--tpm", &opts.tpm)?);
    let req = AdminRequest {
        name,
        rpm,
        tpm,
        ..AdminRequest::new(op)
    };
    Ok(admin(opts, op, req))
}

/// `memgate eval longmemeval …`: its own flags, so the other commands' stay as they are.
fn eval(args: &[String]) -> Result<Command, Fail> {
    let mut flags: std::collections::HashMap<&str, String> = Default::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "--help" | "-h") {
            return Ok(Command::Print(EVAL_HELP.to_owned()));
        }
        let (flag, inline) = match a.split_once('=') {
            Some((k, v)) if a.starts_with("--") => (k, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        const FLAGS: [&str; 9] = [
            "--data",
            "--model",
            "--judge",
            "--limit",
            "--concurrency",
            "--out",
            "--url",
            "--key",
            "--config",
        ];
        match FLAGS
            .iter()
            .find(|f| **f == flag || (flag == "-c" && **f == "--config"))
        {
            Some(f) => {
                let v = match inline.or_else(|| it.next().cloned()) {
                    Some(v) => v,
                    None => return usage(format!("{f} needs a value; see `memgate eval --help`")),
                };
                flags.insert(f, v);
            }
            None if flag.starts_with('-') && flag.len() > 1 => {
                return usage(format!("unknown option {flag} for eval; see `memgate eval --help`"))
            }
            None => positional.push(a.clone()),
        }
    }
    match positional.as_slice() {
        [b] if b == "longmemeval" => {}
        [] => return usage("eval needs a benchmark: `memgate eval longmemeval …`; see `memgate eval --help`"),
        [b, extra, ..] if b == "longmemeval" => {
            return usage(format!("unexpected argument {extra:?} to eval longmemeval"))
        }
        [other, ..] => {
            return usage(format!(
                "unknown benchmark {other:?}; memgate knows longmemeval (see `memgate eval --help`)"
            ))
        }
    }
    let mut need = |f: &str, what: &str| match flags.remove(f) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => usage(format!("eval longmemeval needs {f} {what}; see `memgate eval --help`")),
    };
    let data = need("--data", "FILE (the LongMemEval JSON)")?;
    let model = need("--model", "PROVIDER/MODEL (the model that answers)")?;
    let judge = need("--judge", "PROVIDER/MODEL (the model that grades)")?;
    let count = |f: &str, v: Option<String>| -> Result<Option<usize>, Fail> {
        match v {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => usage(format!("{f} needs a positive whole number, not {v:?}")),
            },
        }
    };
    let limit = count("--limit", flags.remove("--limit"))?;
    let concurrency = count("--concurrency", flags.remove("--concurrency"))?.unwrap_or(4);
    let url = flags.remove("--url");
    let key_given = flags.contains_key("--key");
    let key = flags
        .remove("--key")
        .or_else(|| std::env::var("MEMGATE_KEY").ok())
        .filter(|k| !k.is_empty());
    let config = flags.remove("--config").map(PathBuf::from);
    match (&url, &config) {
        (Some(_), Some(_)) => {
            return usage(
                "--config is for the gateway eval starts itself; with --url the running gateway's config applies",
            )
        }
        (Some(u), None) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            return usage(format!("--url needs http://HOST:PORT, not {u:?}"))
        }
        (None, _) if key_given => return usage("--key goes with --url (the gateway started in process needs no key)"),
        _ => {}
    }
    Ok(Command::Eval(crate::eval::Options {
        data: data.into(),
        model,
        judge,
        limit,
        concurrency,
        out: flags
            .remove("--out")
            .unwrap_or_else(|| "longmemeval-results.jsonl".to_owned())
            .into(),
        url,
        key,
        config,
    }))
}
