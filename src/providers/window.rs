//! Context windows: how many tokens a provider's model reads at most, so memory can keep what
//! it sends within it.
//!
//! A configured window wins (`context_windows` per model, then `context_window`). Otherwise an
//! OpenAI-compatible server on a custom `base_url` is asked where local servers tell: llama.cpp's
//! `GET /props` (`default_generation_settings.n_ctx`), then Ollama's `POST /api/show`
//! (`model_info["<arch>.context_length"]`, or a smaller `num_ctx` in `parameters`, which is what
//! Ollama actually loads). `/props` is the server's, asked once per provider; `/api/show` is
//! cached per model, for at most [`MAX_DISCOVERED`] names a client chose. A server that answers
//! neither (both refused: llama-cpp-python, vLLM, a cloud API) is not asked again; one that
//! could not be reached is asked again after [`RETRY`]. An unknown window means no window-based
//! limit.

use super::Provider;
use crate::config::{ProviderConfig, ProviderKind, MIN_CONTEXT_WINDOW};
use crate::upstream::{Client, UpstreamRequest};
use futures_lite::future;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one discovery request may take: it delays the request that needs it.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// After a discovery that could not reach the server, when to ask again.
const RETRY: Duration = Duration::from_secs(60);
/// The largest window believed: a bigger number is a broken answer, not a model.
const MAX_WINDOW: u64 = 1 << 24;
/// Model names whose windows are asked of `/api/show` and cached, per provider: the names are
/// the clients' to choose, so past this many only names the config knows (listed models, alias
/// targets) are asked.
const MAX_DISCOVERED: usize = 64;

#[derive(Debug)]
pub(super) struct Windows {
    default: Option<u64>,
    per_model: BTreeMap<String, u64>,
    /// What `/props` told: the server's window, for whatever model it serves. Asked one at a
    /// time (requests arriving meanwhile wait for that answer).
    props: smol::lock::Mutex<Option<Found>>,
    /// What `/api/show` told per model, at most [`MAX_DISCOVERED`] names the config does not know.
    found: Mutex<HashMap<String, Found>>,
    /// What the server's own "context too long" answer said (the smallest, for any model).
    learnt: Mutex<Option<u64>>,
}

/// What discovery found for a model (`None`: nothing), and until when a `None` holds (`None`:
/// for good).
type Found = (Option<u64>, Option<Instant>);

impl Windows {
    pub(super) fn new(cfg: &ProviderConfig) -> Windows {
        Windows {
            default: cfg.context_window,
            per_model: cfg.context_windows.clone(),
            props: smol::lock::Mutex::default(),
            found: Mutex::default(),
            learnt: Mutex::default(),
        }
    }
}

/// What one discovery request learnt.
enum Asked {
    Window(u64),
    /// The server answered, but not with a window (it is not that kind of server).
    Refused,
    /// No answer (down, timed out): worth asking again later.
    Unreachable,
}

impl Provider {
    /// The context window of `model` (the upstream name) on this provider, if known.
    pub async fn context_window(&self, client: &Client, model: &str) -> Option<u64> {
        let w = &self.windows;
        let client_name = self.aliases.iter().find(|(_, up)| *up == model).map(|(k, _)| k);
        if let Some(n) = w
            .per_model
            .get(model)
            .or_else(|| client_name.and_then(|c| w.per_model.get(c)))
        {
            return Some(*n);
        }
        if w.default.is_some() {
            return w.default;
        }
        // What the server said in an error is believed when it is smaller than what it told.
        let learnt = *w.learnt.lock().unwrap_or_else(|p| p.into_inner());
        let told = self.discovered(client, model).await;
        match (told, learnt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The window the server tells for `model` (see the module documentation), cached.
    async fn discovered(&self, client: &Client, model: &str) -> Option<u64> {
        if !self.discovers() {
            return None;
        }
        if let Some(n) = self.props_window(client).await {
            return Some(n);
        }
        let w = &self.windows;
        {
            let mut found = w.found.lock().unwrap_or_else(|p| p.into_inner());
            match found.get(model) {
                Some((n, until)) if n.is_some() || until.is_none_or(|t| Instant::now() < t) => return *n,
                Some(_) => {}
                None if found.len() >= MAX_DISCOVERED && !self.knows(model) => return None,
                None => {}
            }
            // The name's place, taken before asking: requests meanwhile (for it or for new
            // names past the bound) do not ask too.
            found.insert(model.to_owned(), (None, Some(Instant::now() + 2 * ASK_TIMEOUT)));
        }
        let (window, until) = found(self.ask(client, self.show(model)).await);
        match window {
            Some(n) => log::info!(
                "provider '{}': model {model:?} has a context window of {n} tokens",
                self.name
            ),
            None => log::debug!("provider '{}': no context window discovered for {model:?}", self.name),
        }
        w.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned(), (window, until));
        window
    }

    /// The server's window from `/props` (llama.cpp), asked once per provider (again after
    /// [`RETRY`] if it could not be reached).
    async fn props_window(&self, client: &Client) -> Option<u64> {
        let mut props = self.windows.props.lock().await;
        if let Some((n, until)) = *props {
            if n.is_some() || until.is_none_or(|t| Instant::now() < t) {
                return n;
            }
        }
        let told = found(self.ask(client, self.props()).await);
        if let Some(n) = told.0 {
            log::info!(
                "provider '{}': the server has a context window of {n} tokens",
                self.name
            );
        }
        *props = Some(told);
        told.0
    }

    /// Whether the config names `model` (a listed model or an alias's upstream name).
    fn knows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model) || self.aliases.values().any(|m| m == model)
    }

    /// Learns the window from an answer refusing a request as too long for it, which names it:
    /// "This model's maximum context length is N tokens" (OpenAI, vLLM, llama-cpp-python, which
    /// has no `/props`) or llama.cpp's `n_ctx` field. The next requests then fit.
    pub(super) fn learn_window(&self, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let said = v.pointer("/error/n_ctx").and_then(Value::as_u64).or_else(|| {
            let message = v.pointer("/error/message")?.as_str()?;
            let (_, after) = message.split_once("maximum context length is ")?;
            after.split(' ').next()?.parse().ok()
        });
        let Some(n) = said.filter(|n| (MIN_CONTEXT_WINDOW..=MAX_WINDOW).contains(n)) else {
            return;
        };
        let mut learnt = self.windows.learnt.lock().unwrap_or_else(|p| p.into_inner());
        if learnt.is_none_or(|l| n < l) {
            log::info!(
                "provider '{}': the server says its context window is {n} tokens",
                self.name
            );
            *learnt = Some(n);
        }
    }

    /// Whether the provider may be a local server that tells its window: an OpenAI-compatible
    /// one on its own URL (api.openai.com tells nothing), or recorded fixtures.
    fn discovers(&self) -> bool {
        match self.kind {
            ProviderKind::Replay => true,
            ProviderKind::Openai => !self.base_url.starts_with("https://api.openai.com"),
            ProviderKind::Anthropic | ProviderKind::Gemini => false,
        }
    }

    /// The server's root: `base_url` without its `/v1`.
    fn root(&self) -> &str {
        self.base_url.strip_suffix("/v1").unwrap_or(&self.base_url)
    }

    fn discovery(&self, method: http_types::Method, path: &str, body: Vec<u8>) -> UpstreamRequest {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(key) = &self.api_key {
            headers.push(("authorization", format!("Bearer {key}")));
        }
        UpstreamRequest {
            method,
            url: format!("{}{path}", self.root()),
            headers,
            body,
            gives_way: None,
        }
    }

    fn props(&self) -> (UpstreamRequest, fn(&Value) -> Option<u64>) {
        let req = self.discovery(http_types::Method::Get, "/props", Vec::new());
        (req, |v| v.pointer("/default_generation_settings/n_ctx")?.as_u64())
    }

    fn show(&self, model: &str) -> (UpstreamRequest, fn(&Value) -> Option<u64>) {
        let body = serde_json::json!({ "model": model }).to_string().into_bytes();
        (
            self.discovery(http_types::Method::Post, "/api/show", body),
            ollama_window,
        )
    }

    async fn ask(&self, client: &Client, (req, read): (UpstreamRequest, fn(&Value) -> Option<u64>)) -> Asked {
        let answer = async {
            let res = match &self.replay {
                // A fixture set without this exchange is a server that does not serve it.
                Some(fixtures) => fixtures.answer(&req).map_err(|_| Asked::Refused)?,
                None => client.send(&req).await.map_err(|_| Asked::Unreachable)?,
            };
            if !res.is_success() {
                return Err(Asked::Refused);
            }
            res.bytes().await.map_err(|_| Asked::Unreachable)
        };
        let timeout = async {
            smol::Timer::after(ASK_TIMEOUT).await;
            Err(Asked::Unreachable)
        };
        match future::or(answer, timeout).await {
            Ok(body) => serde_json::from_slice::<Value>(&body)
                .ok()
                .as_ref()
                .and_then(read)
                .filter(|n| (MIN_CONTEXT_WINDOW..=MAX_WINDOW).contains(n))
                .map_or(Asked::Refused, Asked::Window),
            Err(asked) => asked,
        }
    }
}

/// What is cached of one discovery request.
fn found(asked: Asked) -> Found {
    match asked {
        Asked::Window(n) => (Some(n), None),
        Asked::Refused => (None, None),
        Asked::Unreachable => (None, Some(Instant::now() + RETRY)),
    }
}

/// Ollama's window from `/api/show`: the model's `<arch>.context_length`, or the smaller
/// `num_ctx` the model is loaded with when its parameters set one.
fn ollama_window(v: &Value) -> Option<u64> {
    let info = v.get("model_info")?;
    let arch = info.get("general.architecture")?.as_str()?;
    let trained = info.get(format!("{arch}.context_length"))?.as_u64()?;
    let loaded = v
        .get("parameters")
        .and_then(Value::as_str)
        .into_iter()
        .flat_map(str::lines)
        .find_map(|l| l.strip_prefix("num_ctx")?.trim().parse::<u64>().ok());
    Some(loaded.map_or(trained, |n| n.min(trained)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_ollamas_show_answer() {
        let v = json!({"model_info": {"general.architecture": "llama", "llama.context_length": 131072}});
        assert_eq!(ollama_window(&v), Some(131072));
        let v = json!({"parameters": "num_keep 24\nnum_ctx 8192\nstop \"<|eot_id|>\"",
                       "model_info": {"general.architecture": "llama", "llama.context_length": 131072}});
        assert_eq!(ollama_window(&v), Some(8192));
        assert_eq!(ollama_window(&json!({"model_info": {}})), None);
    }

    #[test]
    fn learns_the_window_from_an_error_that_names_it() {
        let config =
            crate::config::Config::parse("[providers.l]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n")
                .unwrap();
        let p = Provider::new("l", &config.providers["l"]).unwrap();
        let learnt = || *p.windows.learnt.lock().unwrap();
        p.learn_window(br#"{"error":{"message":"no window here","type":"invalid_request_error"}}"#);
        assert_eq!(learnt(), None);
        // llama-cpp-python's words (recorded), then llama.cpp's field: the smaller holds.
        p.learn_window(include_bytes!(
            "../../fixtures/local/ctx-window/030_chat_context_length_exceeded/response.json"
        ));
        assert_eq!(learnt(), Some(4096));
        p.learn_window(br#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":2048}}"#);
        assert_eq!(learnt(), Some(2048));
        p.learn_window(br#"{"error":{"message":"This model's maximum context length is 8192 tokens."}}"#);
        assert_eq!(learnt(), Some(2048));
    }
}

#[cfg(test)]
mod bounded {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Arc;

    /// A server answering every request 404 `{"detail":"Not Found"}` (llama-cpp-python's answer
    /// to `/props` and `/api/show`), closing each connection; returns its URL and the request
    /// lines it read.
    fn not_found_server() -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut first, mut len) = (String::new(), 0);
                reader.read_line(&mut first).unwrap();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                reader.read_exact(&mut vec![0; len]).unwrap();
                record.lock().unwrap().push(first.trim().to_owned());
                let body = r#"{"detail":"Not Found"}"#;
                let head = "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close";
                let _ = write!(stream, "{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            }
        });
        (url, seen)
    }

    #[test]
    fn client_chosen_model_names_cost_bounded_cache_entries_and_asks() {
        let (url, seen) = not_found_server();
        let toml =
            format!("[providers.l]\nkind = \"openai\"\nbase_url = \"{url}\"\naliases = {{ small = \"smollm2\" }}\n");
        let config = crate::config::Config::parse(&toml).unwrap();
        let p = Provider::new("l", &config.providers["l"]).unwrap();
        let client = Client::new(Default::default(), &config.limits);
        smol::block_on(async {
            for i in 0..500 {
                assert_eq!(
                    p.context_window(&client, &format!("random-{i}-{}", i * 7919)).await,
                    None
                );
            }
            // A name the config knows is still discovered past the bound.
            assert_eq!(p.context_window(&client, "smollm2").await, None);
        });
        let found = p.windows.found.lock().unwrap().len();
        assert!(found <= MAX_DISCOVERED + 1, "{found} names cached");
        let seen = seen.lock().unwrap().clone();
        let props = seen.iter().filter(|l| l.starts_with("GET /props ")).count();
        assert_eq!(props, 1, "/props is the server's, asked once");
        assert!(seen.len() <= MAX_DISCOVERED + 2, "{} discovery requests", seen.len());
        assert_eq!(seen.last().unwrap(), "POST /api/show HTTP/1.1", "{seen:?}");
    }
}
