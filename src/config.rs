//! `memgate.toml`: parsing, defaults, validation and the zero-config provider set.
//!
//! Config types deny unknown fields, so a typo is an error naming the key and its line rather
//! than a setting silently ignored.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the config file is looked for when `--config` and `$MEMGATE_CONFIG` are absent.
pub const SYSTEM_CONFIG: &str = "/etc/memgate/memgate.toml";
/// Listen address when none is configured: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
const DEFAULT_MAX_BODY: u64 = 32 << 20;
/// Open client connections when `[limits] max_connections` is unset: far above what one box
/// serves, far below what exhausts it (each is a file descriptor: the unit raises LimitNOFILE).
const DEFAULT_MAX_CONNECTIONS: u64 = 4096;
/// Requests served at once when `[limits] max_in_flight` is unset; beyond it a fast 503.
const DEFAULT_MAX_IN_FLIGHT: u64 = 1024;
/// Upstream statuses retried when `[retry] statuses` is not set.
pub const DEFAULT_RETRY_STATUSES: [u16; 6] = [429, 500, 502, 503, 504, 529];
/// The smallest `context_window` accepted: below it no memory context fits.
pub const MIN_CONTEXT_WINDOW: u64 = 256;

/// The whole configuration, as written in the file (defaults applied by the accessors).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `"provider/model" = ["fallback/model", …]`, tried in order.
    #[serde(default)]
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

/// `[auth]`: who may use the gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Unset: `none` when listening on loopback, `keys` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
    /// Permits `mode = "none"` on a non-loopback address: an explicit opt-in to an open LAN.
    #[serde(default)]
    pub allow_open_lan: bool,
}

/// `[server]`: which hosts and origins a browser may reach the gateway under.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// DNS names served besides IP addresses and `localhost` (a LAN name such as
    /// `gateway.lan`); any other name in `Host` is a 421, against DNS rebinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://gateway.example`) whose pages may call the API besides the gateway's
    /// own: a dashboard served by a proxy in front under another name, or an app whose pages
    /// call memgate from a browser engine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

impl ServerConfig {
    fn check(&self) -> Result<(), String> {
        let name = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if let Some(h) = self.allowed_hosts.iter().find(|h| !name(h)) {
            return Err(format!(
                "[server] allowed_hosts: {h:?} is not a host name such as \"gateway.lan\" (no scheme, port or path; \
                 IP addresses and localhost are always served)"
            ));
        }
        // Any scheme: a desktop app built on a browser engine sends its own (`app://…`).
        let origin = |o: &str| {
            let Some((scheme, rest)) = o.split_once("://") else {
                return false;
            };
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "80"));
            scheme_ok && name(host) && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        };
        if let Some(o) = self.allowed_origins.iter().find(|o| !origin(o)) {
            return Err(format!(
                "[server] allowed_origins: {o:?} is not an origin such as \"https://gateway.example\" (scheme, host \
                 and port if not the default; no path)"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request needs a gateway key (`msk_…`).
    Keys,
    /// No gateway key; a client's `Authorization` header is treated as a placeholder.
    None,
}

/// `[timeouts]`, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake to an upstream.
    pub connect_ms: u64,
    /// From sending the request to the upstream's response head (models can think for a while).
    pub first_byte_ms: u64,
    /// Longest silence between two reads of an upstream body (per SSE event when streaming).
    pub idle_ms: u64,
    /// How long a client may take to send a request head (slowloris bound).
    pub header_ms: u64,
    /// How long a client may take to send the request body.
    pub body_ms: u64,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_ms: u64,
    /// During a stream, a `: keep-alive` comment this often, so proxies and clients with read
    /// timeouts do not give up while a model thinks (0: never).
    pub sse_keepalive_ms: u64,
    /// On SIGTERM/SIGINT, how long requests in flight (open streams included) and background
    /// memory runs get to finish before they are cut off. Keep it under systemd's
    /// TimeoutStopSec (30 s in the shipped unit).
    pub shutdown_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 10_000,
            first_byte_ms: 300_000,
            idle_ms: 300_000,
            header_ms: 10_000,
            body_ms: 60_000,
            keepalive_ms: 75_000,
            sse_keepalive_ms: 15_000,
            shutdown_ms: 20_000,
        }
    }
}

/// `[providers.NAME]`: one upstream. NAME is the model prefix clients use. Its Debug hides the key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// As the vendor's own SDK takes it; defaults per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Listed by `/v1/models` as `NAME/model`; `"auto"` or none at all: asked of an
    /// OpenAI-compatible upstream (`GET /models`).
    #[serde(default, skip_serializing_if = "Models::is_unset")]
    pub models: Models,
    /// Whether `/v1/responses` is passed through or translated through chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<ResponsesMode>,
    /// Whether streamed chat requests to an OpenAI-compatible provider ask for a usage chunk
    /// (`stream_options.include_usage`); default true. Servers that refuse the field are also
    /// found out by their 400/422 and asked no more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_usage: Option<bool>,
    /// How many requests the upstream runs at once (llama-cpp-python: 1; llama.cpp's server:
    /// its `--parallel`). Set, memory's calls there give way to clients' requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<usize>,
    /// Model names clients use and the upstream names they stand for, e.g.
    /// `"claude-sonnet-4" = "claude-sonnet-4-20250514"`: OpenRouter-style names work against the
    /// vendor's own API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, String>,
    /// Fixture directory of a `replay` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Tokens the provider's models read at most (prompt and answer), for memory's context
    /// budget; unset: discovered from a local server (`/props`, `/api/show`), else unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Per-model windows (upstream or client names), over `context_window`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_windows: BTreeMap<String, u64>,
}

/// `[providers.NAME] models`: the names listed, or `"auto"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Models {
    /// None given (or an empty list): an OpenAI-compatible provider's are asked of the upstream,
    /// as with `Auto`; other kinds list none.
    #[default]
    Unset,
    /// Asked of the upstream (`GET {base_url}/models`).
    Auto,
    Listed(Vec<String>),
}

impl Models {
    fn is_unset(&self) -> bool {
        *self == Models::Unset
    }

    /// The names the config lists (none for `Unset` and `Auto`).
    pub fn listed(&self) -> &[String] {
        match self {
            Models::Listed(names) => names,
            _ => &[],
        }
    }
}

impl Serialize for Models {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Models::Auto => s.serialize_str("auto"),
            _ => self.listed().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Models {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Word(String),
            List(Vec<String>),
        }
        match Written::deserialize(d) {
            Ok(Written::Word(w)) if w == "auto" => Ok(Models::Auto),
            Ok(Written::List(names)) if names.is_empty() => Ok(Models::Unset),
            Ok(Written::List(names)) => Ok(Models::Listed(names)),
            _ => Err(serde::de::Error::custom(
                "models must be a list of model names or \"auto\"",
            )),
        }
    }
}

/// `[providers.NAME] responses`: how `/v1/responses` reaches an OpenAI-compatible provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponsesMode {
    /// Passed through; after a 404 for the endpoint, translated through chat from then on.
    #[default]
    Auto,
    /// Always passed through (the upstream's own error if it lacks the endpoint).
    Passthrough,
    /// Always translated through chat.
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Replay,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Replay => "replay",
        }
    }

    fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Replay => None,
        }
    }
}

impl ProviderConfig {
    /// The base URL with any trailing slash removed.
    pub fn base_url(&self) -> Option<String> {
        let url = self.base_url.as_deref().or(self.kind.default_base_url())?;
        Some(url.trim_end_matches('/').to_owned())
    }

    /// The configured key: `api_key`, else the `api_key_env` variable, else the systemd
    /// credential of that name (see [`secret`]).
    pub fn api_key(&self) -> Option<String> {
        self.api_key
            .clone()
            .filter(|k| !k.is_empty())
            .or_else(|| secret(self.api_key_env.as_deref()?))
    }
}

/// A secret named `name`: the environment variable, else `$CREDENTIALS_DIRECTORY/name` (a
/// systemd credential from `LoadCredential=`), trailing newline removed. Empty counts as unset.
pub fn secret(name: &str) -> Option<String> {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return Some(v);
    }
    // A plain file name only: the name comes from the config, the directory from systemd.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let text = std::fs::read_to_string(Path::new(&dir).join(name)).ok()?;
    Some(text.trim_end_matches(['\r', '\n']).to_owned()).filter(|v| !v.is_empty())
}

/// `[memory]`: observational memory (filled in by the memory feature).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observer_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflector_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<MemoryScope>,
    /// Output tokens an observer or reflector call may generate (`max_tokens`); by default
    /// half its input, within 256..4096 (observer) or 256..16384 (reflector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// How long one observer or reflector call may take before it is given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
    /// The longest a request past blockAfter waits for observation before going on without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// On an upstream with `slots`, how long a client's request that found them all taken may
    /// wait behind a memory call before that call hangs up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub give_way_ms: Option<u64>,
    /// On an upstream with `slots`, how long clients must leave it alone (a slot free, no
    /// request started or ended) before a memory call is sent there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_ms: Option<u64>,
    /// Buffered observation: a background observer run every this share of `message_tokens`
    /// (0 turns it off), its observations activated when the thread reaches the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_tokens: Option<f64>,
}

impl MemoryConfig {
    fn check(&self) -> Result<(), String> {
        if self.buffer_tokens.is_some_and(|b| !(0.0..1.0).contains(&b)) {
            return Err("[memory] buffer_tokens is a share of message_tokens: at least 0 (off) and below 1".to_owned());
        }
        if self.max_output_tokens == Some(0) || self.call_timeout_ms == Some(0) {
            return Err("[memory] max_output_tokens and call_timeout_ms must be above 0".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryScope {
    Thread,
    Resource,
}

/// `[retry]`: upstream retries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per route, the first included (default 3; 1 turns retries off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The longest one request spends retrying one route (default 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_ms: Option<u64>,
    /// Upstream statuses tried again (default 429, 500, 502, 503, 504, 529).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<u16>>,
}

impl RetryConfig {
    pub fn statuses(&self) -> &[u16] {
        self.statuses.as_deref().unwrap_or(&DEFAULT_RETRY_STATUSES)
    }

    fn check(&self) -> Result<(), String> {
        match self.statuses().iter().find(|s| !(400..=599).contains(*s)) {
            Some(s) => Err(format!(
                "[retry] statuses: {s} is not an error status (400-599); a success or redirect is never retried"
            )),
            None => Ok(()),
        }
    }

    pub fn attempts(&self) -> u32 {
        self.max_attempts.unwrap_or(3).max(1)
    }

    pub fn total(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_total_ms.unwrap_or(60_000))
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `GET /metrics` needs a gateway key like the API (default: open, for a scraper on the LAN).
    #[serde(default)]
    pub require_key: bool,
}

/// `[limits]`: per-key and global limits. `max_connections` and `max_in_flight` always hold a
/// value after [`Config::parse`] (their defaults), so `check-config` shows what is in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u64>,
    /// The largest non-streamed upstream body read (an embeddings batch is big); default 32 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upstream_body_bytes: Option<u64>,
    /// The largest upstream SSE line or event (Gemini's are whole responses); default 4 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sse_event_bytes: Option<u64>,
    /// Bytes all request and upstream bodies buffered at once may take; default 256 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<u64>,
    /// Message bytes each key (tenant) may store; unset or 0: no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stored_bytes_per_key: Option<u64>,
}

impl LimitsConfig {
    pub fn upstream_body_bytes(&self) -> u64 {
        self.max_upstream_body_bytes.unwrap_or(32 << 20)
    }

    pub fn sse_event_bytes(&self) -> u64 {
        self.max_sse_event_bytes.unwrap_or(4 << 20)
    }

    pub fn buffered_bytes(&self) -> u64 {
        self.max_buffered_bytes.unwrap_or(256 << 20)
    }
}

/// Where the config came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

impl Config {
    /// Finds and loads the config: `explicit`, else `$MEMGATE_CONFIG`, else [`SYSTEM_CONFIG`] if it
    /// exists, else built-in defaults.
    pub fn locate(explicit: Option<&Path>) -> Result<(Config, Source), String> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("MEMGATE_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
        let Some(path) = path else {
            return Ok((Config::default().finish()?, Source::Defaults));
        };
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let config = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((config, Source::File(path)))
    }

    /// Parses and validates TOML text; errors name the key and line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        config.finish()
    }

    /// Applies zero-config providers and checks cross-field rules.
    fn finish(mut self) -> Result<Config, String> {
        if self.providers.is_empty() {
            self.detect_providers();
        }
        for (name, p) in &self.providers {
            if name.is_empty() || name.contains('/') {
                return Err(format!("provider name {name:?} must be non-empty and contain no '/'"));
            }
            let speaks_openai = matches!(p.kind, ProviderKind::Openai | ProviderKind::Replay);
            if !speaks_openai && p.models == Models::Auto {
                return Err(format!(
                    "[providers.{name}] models = \"auto\" needs an OpenAI-compatible provider (kind \"openai\" or \"replay\"); list the {} models instead",
                    p.kind.name()
                ));
            }
            if !speaks_openai && p.responses.is_some() {
                return Err(format!(
                    "[providers.{name}] responses applies to OpenAI-compatible providers; a {} provider always has Responses translated through chat",
                    p.kind.name()
                ));
            }
            if !speaks_openai && p.stream_usage.is_some() {
                return Err(format!(
                    "[providers.{name}] stream_usage applies to OpenAI-compatible providers; a {} stream always reports usage",
                    p.kind.name()
                ));
            }
            if p.slots == Some(0) {
                return Err(format!(
                    "[providers.{name}] slots must be at least 1 (how many requests the upstream runs at once)"
                ));
            }
            if p.kind == ProviderKind::Replay && p.dir.is_none() {
                return Err(format!(
                    "[providers.{name}] kind = \"replay\" needs dir = \"fixtures/…\""
                ));
            }
            let windows = p.context_window.iter().chain(p.context_windows.values());
            if let Some(w) = windows.into_iter().find(|w| **w < MIN_CONTEXT_WINDOW) {
                return Err(format!(
                    "[providers.{name}] a context window of {w} tokens is too small to hold a conversation \
                     (at least {MIN_CONTEXT_WINDOW}); leave it out to have memgate discover it"
                ));
            }
            if let Some(url) = p.base_url() {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "[providers.{name}] base_url {url:?} must start with http:// or https://"
                    ));
                }
            }
        }
        if let Some(d) = &self.default_provider {
            if !self.providers.contains_key(d) {
                return Err(format!(
                    "default_provider = {d:?} is not a configured provider; configured: {}",
                    self.provider_names()
                ));
            }
        }
        for (from, to) in &self.fallbacks {
            if to.is_empty() {
                return Err(format!("[fallbacks] {from:?} lists no fallback models"));
            }
        }
        self.server.check()?;
        self.retry.check()?;
        self.memory.check()?;
        let limits = &mut self.limits;
        for (name, value, default) in [
            ("max_connections", &mut limits.max_connections, DEFAULT_MAX_CONNECTIONS),
            ("max_in_flight", &mut limits.max_in_flight, DEFAULT_MAX_IN_FLIGHT),
        ] {
            if *value == Some(0) {
                return Err(format!(
                    "[limits] {name} = 0 would refuse everything; leave it out for {default}"
                ));
            }
            value.get_or_insert(default);
        }
        self.listen_addr()?;
        Ok(self)
    }

    /// Providers found in the usual environment variables, plus keyless local Ollama.
    fn detect_providers(&mut self) {
        let env = secret;
        let mut add = |name: &str, kind, base: Option<String>, key_env: Option<&str>| {
            self.providers.insert(
                name.to_owned(),
                ProviderConfig {
                    kind,
                    base_url: base,
                    api_key: None,
                    api_key_env: key_env.map(str::to_owned),
                    models: Models::Unset,
                    responses: None,
                    stream_usage: None,
                    slots: None,
                    aliases: Default::default(),
                    dir: None,
                    context_window: None,
                    context_windows: Default::default(),
                },
            );
        };
        if env("OPENAI_API_KEY").is_some() || env("OPENAI_BASE_URL").is_some() {
            add(
                "openai",
                ProviderKind::Openai,
                env("OPENAI_BASE_URL"),
                Some("OPENAI_API_KEY"),
            );
        }
        if env("ANTHROPIC_API_KEY").is_some() {
            add("anthropic", ProviderKind::Anthropic, None, Some("ANTHROPIC_API_KEY"));
        }
        if env("GEMINI_API_KEY").is_some() {
            add("google", ProviderKind::Gemini, None, Some("GEMINI_API_KEY"));
        } else if env("GOOGLE_API_KEY").is_some() {
            add("google", ProviderKind::Gemini, None, Some("GOOGLE_API_KEY"));
        }
        add(
            "ollama",
            ProviderKind::Openai,
            Some("http://127.0.0.1:11434/v1".to_owned()),
            None,
        );
        if self.default_provider.is_none() {
            let first = if self.providers.contains_key("openai") {
                "openai"
            } else {
                "ollama"
            };
            self.default_provider = Some(first.to_owned());
        }
    }

    pub fn provider_names(&self) -> String {
        self.providers.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        let s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        s.parse()
            .map_err(|_| format!("listen = {s:?} is not an address such as \"127.0.0.1:4000\" or \"0.0.0.0:4000\""))
    }

    /// `data_dir`, else `$STATE_DIRECTORY` (set by systemd's StateDirectory=), else `./memgate-data`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .or_else(|| {
                let v = std::env::var_os("STATE_DIRECTORY")?;
                // systemd may pass several colon-separated directories; the first is ours.
                let first = v.to_str()?.split(':').next()?.to_owned();
                Some(PathBuf::from(first))
            })
            .unwrap_or_else(|| PathBuf::from("memgate-data"))
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY)
    }

    /// The auth mode in force for `listen`: explicit, else `none` on loopback, `keys` otherwise.
    pub fn auth_mode(&self, listen: SocketAddr) -> AuthMode {
        self.auth.mode.unwrap_or(if listen.ip().is_loopback() {
            AuthMode::None
        } else {
            AuthMode::Keys
        })
    }

    /// Refuses an unauthenticated gateway on a LAN address unless explicitly allowed.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<(), String> {
        if self.auth_mode(listen) == AuthMode::None && !listen.ip().is_loopback() && !self.auth.allow_open_lan {
            return Err(format!(
                "refusing to serve without keys on {listen}: anyone on the network could spend your provider \
                 credit. Use [auth] mode = \"keys\" (and `memgate keys create NAME`), listen on 127.0.0.1, \
                 or set [auth] allow_open_lan = true if this network is trusted"
            ));
        }
        Ok(())
    }

    /// The effective config as TOML, every secret replaced by a mask.
    pub fn to_masked_toml(&self) -> String {
        let mut c = self.clone();
        for p in c.providers.values_mut() {
            if let Some(k) = &mut p.api_key {
                *k = mask(k);
            }
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &Redacted(self.api_key.as_deref()))
            .field("api_key_env", &self.api_key_env)
            .field("models", &self.models)
            .field("responses", &self.responses)
            .field("stream_usage", &self.stream_usage)
            .field("slots", &self.slots)
            .field("aliases", &self.aliases)
            .field("dir", &self.dir)
            .field("context_window", &self.context_window)
            .field("context_windows", &self.context_windows)
            .finish()
    }
}

/// Shows whether a secret is set, never any of it: for the Debug of structs holding keys, so
/// that a `{:?}` in a log line or a panic message cannot leak one.
pub struct Redacted<'a>(pub Option<&'a str>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(<redacted>)" } else { "None" })
    }
}

/// Keeps a hint of a secret (its first four characters) and hides the rest.
pub fn mask(secret: &str) -> String {
    let head: String = secret.chars().take(4).collect();
    format!("{head}…(masked)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\n[auth]\nmdoe = \"keys\"\n").unwrap_err();
        assert!(err.contains("mdoe") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn memory_bounds_are_checked() {
        let parse = |memory: &str| Config::parse(&format!("[memory]\n{memory}"));
        let c =
            parse("buffer_tokens = 0.25\nmax_output_tokens = 512\ncall_timeout_ms = 5000\nmax_wait_ms = 0").unwrap();
        assert_eq!((c.memory.buffer_tokens, c.memory.max_wait_ms), (Some(0.25), Some(0)));
        for bad in [
            "buffer_tokens = 1.0",
            "buffer_tokens = -0.1",
            "max_output_tokens = 0",
            "call_timeout_ms = 0",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("[memory]"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_table_parses() {
        let c = Config::parse(
            r#"
            listen = "0.0.0.0:4000"
            default_provider = "openai"
            max_body_bytes = 1024
            [auth]
            mode = "keys"
            [providers.openai]
            kind = "openai"
            api_key = "sk-secret-value"
            models = ["gpt-4o-mini"]
            [providers.anthropic]
            kind = "anthropic"
            [providers.google]
            kind = "gemini"
            [memory]
            observer_model = "google/gemini-2.5-flash"
            message_tokens = 30000
            scope = "resource"
            [retry]
            max_attempts = 3
            [limits]
            rpm = 60
            max_upstream_body_bytes = 1048576
            [fallbacks]
            "openai/gpt-4o" = ["anthropic/claude-sonnet-4"]
            "#,
        )
        .unwrap();
        assert_eq!(c.providers.len(), 3);
        assert_eq!(c.limits.upstream_body_bytes(), 1 << 20);
        assert_eq!(c.limits.sse_event_bytes(), 4 << 20);
        let masked = c.to_masked_toml();
        assert!(
            !masked.contains("sk-secret-value") && masked.contains("sk-s"),
            "{masked}"
        );
    }

    #[test]
    fn open_lan_needs_consent() {
        let c = Config::parse("listen = \"0.0.0.0:4000\"\n[auth]\nmode = \"none\"\n").unwrap();
        assert!(c.check_exposure(c.listen_addr().unwrap()).is_err());
        let c = Config::parse("listen = \"0.0.0.0:4000\"\n[auth]\nmode = \"none\"\nallow_open_lan = true\n").unwrap();
        assert!(c.check_exposure(c.listen_addr().unwrap()).is_ok());
        let c = Config::parse("listen = \"0.0.0.0:4000\"\n").unwrap();
        assert_eq!(c.auth_mode(c.listen_addr().unwrap()), AuthMode::Keys);
    }

    #[test]
    fn connection_and_in_flight_limits_have_defaults_and_may_not_be_zero() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_in_flight),
            (Some(4096), Some(1024))
        );
        let c = Config::parse("[limits]\nmax_connections = 10\n").unwrap();
        assert_eq!(
            (c.limits.max_connections, c.limits.max_in_flight),
            (Some(10), Some(1024))
        );
        let err = Config::parse("[limits]\nmax_in_flight = 0\n").unwrap_err();
        assert!(err.contains("max_in_flight"), "{err}");
    }

    #[test]
    fn allowed_hosts_and_origins_must_be_plain_names_and_origins() {
        let ok = "[server]\nallowed_hosts = [\"gateway.lan\"]\nallowed_origins = [\"https://gw.example\", \"http://gw.lan:8080\", \"app://chat\"]\n";
        assert!(Config::parse(ok).is_ok());
        for bad in [
            "allowed_hosts = [\"gateway.lan:4000\"]",
            "allowed_hosts = [\"http://gateway.lan\"]",
            "allowed_hosts = [\"\"]",
            "allowed_origins = [\"gw.example\"]",
            "allowed_origins = [\"https://gw.example/\"]",
            "allowed_origins = [\"https://gw.example:x\"]",
            "allowed_origins = [\"null\"]",
            "allowed_origins = [\"1x://gw.example\"]",
        ] {
            let err = Config::parse(&format!("[server]\n{bad}\n")).unwrap_err();
            assert!(err.contains("[server] allowed_"), "{bad}: {err}");
        }
    }

    #[test]
    fn models_may_be_listed_or_auto_and_responses_only_for_openai_kinds() {
        let parse = |body: &str| Config::parse(&format!("[providers.p]\n{body}\n"));
        let models = |body: &str| parse(body).unwrap().providers["p"].models.clone();
        assert_eq!(models("kind = \"openai\""), Models::Unset);
        assert_eq!(models("kind = \"openai\"\nmodels = []"), Models::Unset);
        assert_eq!(models("kind = \"openai\"\nmodels = \"auto\""), Models::Auto);
        assert_eq!(
            models("kind = \"openai\"\nmodels = [\"a\"]"),
            Models::Listed(vec!["a".to_owned()])
        );
        for (bad, says) in [
            ("kind = \"openai\"\nmodels = \"all\"", "\"auto\""),
            ("kind = \"gemini\"\nmodels = \"auto\"", "needs an OpenAI-compatible"),
            ("kind = \"anthropic\"\nstream_usage = false", "stream_usage applies"),
            ("kind = \"anthropic\"\nresponses = \"chat\"", "responses applies"),
            ("kind = \"openai\"\nresponses = \"sometimes\"", "responses"),
            ("kind = \"openai\"\nslots = 0", "slots must be at least 1"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let c = parse("kind = \"openai\"\nmodels = \"auto\"\nresponses = \"passthrough\"").unwrap();
        assert_eq!(c.providers["p"].responses, Some(ResponsesMode::Passthrough));
        let shown = c.to_masked_toml();
        assert!(
            shown.contains("models = \"auto\"") && shown.contains("responses = \"passthrough\""),
            "{shown}"
        );
        let err = Config::parse("[retry]\nstatuses = [503, 302]\n").unwrap_err();
        assert!(err.contains("302"), "{err}");
        assert_eq!(
            Config::parse("").unwrap().retry.statuses(),
            [429, 500, 502, 503, 504, 529]
        );
    }

    #[test]
    fn context_windows_parse_and_tiny_ones_are_refused() {
        let c = Config::parse(
            "[providers.l]\nkind = \"openai\"\ncontext_window = 4096\ncontext_windows = { \"smollm2\" = 2048 }\n",
        )
        .unwrap();
        assert_eq!(c.providers["l"].context_windows["smollm2"], 2048);
        let err = Config::parse("[providers.l]\nkind = \"openai\"\ncontext_windows = { \"m\" = 10 }\n").unwrap_err();
        assert!(err.contains("[providers.l]") && err.contains("256"), "{err}");
    }

    #[test]
    fn bad_default_provider_lists_the_configured_ones() {
        let err = Config::parse("default_provider = \"x\"\n[providers.a]\nkind = \"openai\"\n").unwrap_err();
        assert!(err.contains("configured: a"), "{err}");
    }
}
