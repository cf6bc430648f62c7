//! Context windows: how many tokens a provider's model reads at most, so memory can keep what
//! it sends within it.
//!
//! A configured window wins (`context_windows` per model, then `context_window`). Otherwise an
//! OpenAI-compatible server on a custom `base_url` is asked where local servers tell: llama.cpp's
//! `GET /props` (`default_generation_settings.n_ctx`), then Ollama's `POST /api/show`
//! (`model_info["<arch>.context_length"]`, or a smaller `num_ctx` in `parameters`, which is what
//! Ollama actually loads). The answer is cached per model. A server that answers neither (both
//! refused: llama-cpp-python, vLLM, a cloud API) is not asked again; one that could not be
//! reached is asked again after [`RETRY`]. An unknown window means no window-based limit.

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

#[derive(Debug)]
pub(super) struct Windows {
    default: Option<u64>,
    per_model: BTreeMap<String, u64>,
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
        let w = &self.windows;
        if !self.discovers() {
            return None;
        }
        {
            let found = w.found.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((n, until)) = found.get(model) {
                if n.is_some() || until.is_none_or(|t| Instant::now() < t) {
                    return *n;
                }
            }
        }
        let mut unreachable = false;
        let mut window = None;
        for ask in [self.props(), self.show(model)] {
            match self.ask(client, ask).await {
                Asked::Window(n) => {
                    window = Some(n);
                    break;
                }
                Asked::Refused => {}
                Asked::Unreachable => unreachable = true,
            }
        }
        match window {
            Some(n) => log::info!(
                "provider '{}': model {model:?} has a context window of {n} tokens",
                self.name
            ),
            None => log::debug!("provider '{}': no context window discovered for {model:?}", self.name),
        }
        let until = (window.is_none() && unreachable).then(|| Instant::now() + RETRY);
        w.found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_owned(), (window, until));
        window
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
