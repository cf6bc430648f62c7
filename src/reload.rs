//! SIGHUP: read the config file again and apply what can change while serving.
//!
//! Applied at once, to requests that start afterwards: the providers (`[providers.*]` with
//! their keys, URLs, models and aliases, `default_provider` and `[fallbacks]`), and `[timeouts]` `header_ms`,
//! `keepalive_ms` and `shutdown_ms`. Everything else is read once at start (the socket, the
//! database, auth, body limits, `[memory]`, the upstream client's timeouts): a change there is
//! logged as waiting for a restart while the rest of the file still applies. A file that does not
//! parse or validate changes nothing, and the log says why.

use crate::app::App;
use crate::config::Config;
use crate::http::{Server, ServerOptions};
use crate::router::Router;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Command-line settings that win over the file's (`--listen`, `--data-dir`), put over it again
/// on each reload.
pub type Overrides = Box<dyn Fn(&mut Config) -> Result<(), String> + Send + Sync>;

/// The file `serve` was started with, and how to read it the same way again.
pub struct ConfigFile {
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl ConfigFile {
    /// Reads, validates and builds the providers as `serve` does at start.
    fn load(&self) -> Result<(Config, Router), String> {
        let (mut config, _) = Config::locate(Some(&self.path))?;
        (self.overrides)(&mut config).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let router = Router::new(&config).map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok((config, router))
    }
}

/// The config in force and where it came from.
pub struct Live {
    config: Config,
    file: Option<Arc<ConfigFile>>,
}

impl Live {
    /// `file` is `None` when serving built-in defaults: there is nothing to read again.
    pub fn new(config: Config, file: Option<ConfigFile>) -> Live {
        Live {
            config,
            file: file.map(Arc::new),
        }
    }

    /// The settings in force: the start-up config with every reload's live changes applied.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the file again and applies it, or keeps everything as it is; logs which.
    pub async fn reload(&mut self, app: &App, server: &Server) {
        let Some(file) = self.file.clone() else {
            log::warn!(
                "SIGHUP: nothing to reload, memgate runs on built-in defaults; start it with \
                 --config FILE to change settings without a restart"
            );
            return;
        };
        // Reading the file, and replay providers' fixtures, is blocking I/O.
        let path = file.path.display().to_string();
        let (new, router) = match smol::unblock(move || file.load()).await {
            Ok(loaded) => loaded,
            Err(e) => {
                log::error!("config reload failed, still serving the previous config: {e}");
                crate::notify::send("STATUS=config reload failed; serving the previous config (see the log)");
                return;
            }
        };
        let mut applied = self.config.clone();
        applied.providers.clone_from(&new.providers);
        applied.default_provider.clone_from(&new.default_provider);
        // The router holds the fallbacks too.
        applied.fallbacks.clone_from(&new.fallbacks);
        applied.timeouts.header_ms = new.timeouts.header_ms;
        applied.timeouts.keepalive_ms = new.timeouts.keepalive_ms;
        applied.timeouts.shutdown_ms = new.timeouts.shutdown_ms;
        let waiting = differences(&applied, &new);
        app.set_router(router);
        server.set_options(server_options(&applied));
        log::info!("reloaded config {path}: providers {}", applied.provider_names());
        if !waiting.is_empty() {
            log::warn!(
                "{path}: {} changed; that takes a restart (systemctl restart memgate), until then the \
                 running value stays",
                waiting.join(", ")
            );
        }
        crate::notify::send(&format!("STATUS=serving; config reloaded from {path}"));
        self.config = applied;
    }
}

/// Connection limits from the config.
pub(crate) fn server_options(config: &Config) -> ServerOptions {
    ServerOptions {
        header_timeout: Duration::from_millis(config.timeouts.header_ms),
        keepalive_timeout: Duration::from_millis(config.timeouts.keepalive_ms),
        max_connections: config
            .limits
            .max_connections
            .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
    }
}

/// The settings, as `key` or `table.key`, whose values differ between `a` and `b`.
fn differences(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return vec!["(some setting)".to_owned()];
    };
    let mut out = Vec::new();
    for (key, x, y) in pairs(&a, &b) {
        match (x, y) {
            (Some(x @ Value::Object(_)), Some(y @ Value::Object(_))) => {
                out.extend(
                    pairs(x, y)
                        .filter(|(_, p, q)| p != q)
                        .map(|(k, _, _)| format!("{key}.{k}")),
                );
            }
            _ if x != y => out.push(key),
            _ => {}
        }
    }
    out
}

/// Every key of two JSON objects with its value on each side.
fn pairs<'a>(a: &'a Value, b: &'a Value) -> impl Iterator<Item = (String, Option<&'a Value>, Option<&'a Value>)> {
    let keys_a = a.as_object().into_iter().flat_map(|o| o.keys());
    let keys_b = b
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(move |k| a.get(*k).is_none());
    keys_a.chain(keys_b).map(move |k| (k.clone(), a.get(k), b.get(k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_keys_and_table_keys() {
        let a = Config::parse("listen = \"127.0.0.1:1\"\n[memory]\nscope = \"thread\"\n").unwrap();
        let b = Config::parse(
            "listen = \"127.0.0.1:2\"\nmax_body_bytes = 5\n[memory]\nscope = \"resource\"\n[timeouts]\nbody_ms = 1\n",
        )
        .unwrap();
        assert_eq!(
            differences(&a, &b),
            ["listen", "timeouts.body_ms", "memory.scope", "max_body_bytes"]
        );
        assert!(differences(&a, &a).is_empty());
    }
}
