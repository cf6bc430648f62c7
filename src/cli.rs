//! The command line: `serve`, `check-config`, `keys`.

use crate::admin::{Admin, AdminRequest};
use crate::config::{Config, Source};
use std::io::Write;
use std::path::PathBuf;

const HELP: &str = "memgate: a self-hosted LLM gateway with observational memory

Usage:
  memgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]
  memgate check-config [--config FILE]
  memgate keys create NAME [--config FILE] [--data-dir DIR]
  memgate keys list [--config FILE] [--data-dir DIR]
  memgate keys revoke NAME [--config FILE] [--data-dir DIR]
  memgate --version

Config: --config FILE, else $MEMGATE_CONFIG, else /etc/memgate/memgate.toml if it exists,
else built-in defaults (providers from OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY and a
local Ollama). Logs go to stderr; RUST_LOG=debug for more.
";

const SERVE_HELP: &str = "memgate serve: run the gateway

Usage: memgate serve [--config FILE] [--listen ADDR] [--data-dir DIR]

  --config FILE    memgate.toml to use
  --listen ADDR    address to bind, overriding `listen` (default 127.0.0.1:4000)
  --data-dir DIR   where memgate.redb lives, overriding `data_dir`
";

const CHECK_HELP: &str = "memgate check-config: validate the config and print it, secrets masked

Usage: memgate check-config [--config FILE]
Exits 1 with the reason when the config is invalid.
";

const KEYS_HELP: &str = "memgate keys: manage gateway keys (msk_…)

Usage:
  memgate keys create NAME   print a new key on stdout (shown only this once)
  memgate keys list          list keys (names, hints, dates; never the keys)
  memgate keys revoke NAME   stop a key from working
Options: --config FILE, --data-dir DIR. Works whether or not the server is running.
";

/// Options shared by the subcommands.
#[derive(Debug, Default)]
struct Opts {
    config: Option<PathBuf>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    help: bool,
    positional: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--config" | "-c" => o.config = Some(value(a)?.into()),
            "--listen" => o.listen = Some(value(a)?),
            "--data-dir" => o.data_dir = Some(value(a)?.into()),
            "--help" | "-h" => o.help = true,
            s if s.starts_with("--") => {
                if let Some((k, v)) = s.split_once('=') {
                    return parse(&[&[k.to_owned(), v.to_owned()], &it.cloned().collect::<Vec<_>>()[..]].concat()).map(
                        |mut rest| {
                            rest.positional.splice(0..0, o.positional.drain(..));
                            rest.config = rest.config.or(o.config.take());
                            rest.listen = rest.listen.or(o.listen.take());
                            rest.data_dir = rest.data_dir.or(o.data_dir.take());
                            rest.help |= o.help;
                            rest
                        },
                    );
                }
                return Err(format!("unknown option {s}; see `memgate --help`"));
            }
            s => o.positional.push(s.to_owned()),
        }
    }
    Ok(o)
}

impl Opts {
    fn load(&self) -> Result<(Config, Source), String> {
        let (mut config, source) = Config::locate(self.config.as_deref())?;
        if let Some(l) = &self.listen {
            config.listen = Some(l.clone());
            config.listen_addr()?;
        }
        if let Some(d) = &self.data_dir {
            config.data_dir = Some(d.clone());
        }
        Ok((config, source))
    }
}

fn out(text: &str) {
    // stdout may be a closed pipe; println! would panic there.
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Runs the command line; returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "memgate: {e}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let Some(cmd) = args.first() else {
        out(HELP);
        return Ok(());
    };
    let opts = parse(&args[1..])?;
    match cmd.as_str() {
        "--version" | "-V" | "version" => out(&format!("memgate {}\n", env!("CARGO_PKG_VERSION"))),
        "--help" | "-h" | "help" => out(HELP),
        "serve" if opts.help => out(SERVE_HELP),
        "serve" => {
            no_positional(&opts, "serve")?;
            let (config, source) = opts.load()?;
            if let Source::File(p) = &source {
                log::info!("config: {}", p.display());
            }
            crate::serve::run(config)?;
        }
        "check-config" if opts.help => out(CHECK_HELP),
        "check-config" => {
            no_positional(&opts, "check-config")?;
            let (config, source) = opts.load()?;
            let from = match source {
                Source::File(p) => p.display().to_string(),
                Source::Defaults => "built-in defaults".to_owned(),
            };
            out(&format!(
                "# memgate config OK (from {from})\n{}",
                config.to_masked_toml()
            ));
        }
        "keys" if opts.help => out(KEYS_HELP),
        "keys" => keys(&opts)?,
        other => return Err(format!("unknown command {other:?}; see `memgate --help`")),
    }
    Ok(())
}

fn no_positional(opts: &Opts, cmd: &str) -> Result<(), String> {
    match opts.positional.first() {
        Some(p) => Err(format!(
            "unexpected argument {p:?} to {cmd}; see `memgate {cmd} --help`"
        )),
        None => Ok(()),
    }
}

fn keys(opts: &Opts) -> Result<(), String> {
    let (config, _) = opts.load()?;
    let sub = opts.positional.first().map(String::as_str);
    let name = opts.positional.get(1).cloned();
    let op = match (sub, &name) {
        (Some("create"), Some(_)) => "keys.create",
        (Some("revoke"), Some(_)) => "keys.revoke",
        (Some("list"), None) => "keys.list",
        _ => {
            return Err(format!(
                "usage: memgate keys create|revoke NAME, or memgate keys list\n\n{KEYS_HELP}"
            ))
        }
    };
    let admin = Admin::open(&config.data_dir())?;
    let reply = admin.call(&AdminRequest {
        op: op.to_owned(),
        name: name.clone(),
    })?;
    match op {
        "keys.create" => out(&format!("{}\n", reply.key.unwrap_or_default())),
        "keys.revoke" => {
            let _ = writeln!(std::io::stderr(), "revoked key {:?}", name.unwrap_or_default());
        }
        _ => {
            let mut text = String::from("NAME\tHINT\tCREATED\tSTATUS\n");
            for k in reply.keys.unwrap_or_default() {
                let status = k.revoked_at.map_or("active".to_owned(), |t| format!("revoked@{t}"));
                text.push_str(&format!("{}\t{}…\t{}\t{}\n", k.name, k.hint, k.created_at, status));
            }
            out(&text);
        }
    }
    Ok(())
}
