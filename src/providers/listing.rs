//! The models a provider serves, for `/v1/models`: the names its config lists, or those an
//! OpenAI-compatible upstream reports (`GET {base_url}/models`), asked at most once a minute.
//!
//! The upstream's answer is hostile input like any other: a bounded number of ids, each a short
//! line of text. A failure (down, slow, an answer that is not a model list) lists nothing for
//! that provider and is asked again after a short pause; it never fails the whole listing.

use super::Provider;
use crate::config::RetryConfig;
use crate::error::ApiError;
use crate::upstream::retry::Budget;
use crate::upstream::Client;
use futures_lite::future;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long an upstream's list is used before it is asked again.
const FRESH: Duration = Duration::from_secs(60);
/// How long after a failed ask the next one waits (until then: nothing listed).
const AFTER_FAILURE: Duration = Duration::from_secs(10);
/// How long one ask may take: a listing must not hang on a slow upstream.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The most models read from one upstream, and the longest id.
const MAX_MODELS: usize = 2000;
const MAX_ID: usize = 256;

/// One model an upstream reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    /// When the upstream says the model was made (epoch seconds; 0 when not said).
    pub created: u64,
}

/// A provider's cached upstream list.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// Held while asking, so concurrent listings wait for one answer instead of each asking.
    last: smol::lock::Mutex<Option<(Instant, Option<Vec<Model>>)>>,
}

impl Provider {
    /// The models this provider serves: the configured list; else, for an OpenAI-compatible
    /// provider, the upstream's (cached); `None` when that cannot be told (the upstream failed,
    /// or a kind memgate does not ask and no list is configured).
    pub async fn served_models(&self, client: &Client) -> Option<Vec<Model>> {
        if !self.discover {
            let listed = self.models.iter().map(|id| Model {
                id: id.clone(),
                created: 0,
            });
            return (!self.models.is_empty()).then(|| listed.collect());
        }
        let mut last = self.listing.last.lock().await;
        if let Some((at, models)) = &*last {
            let ttl = if models.is_some() { FRESH } else { AFTER_FAILURE };
            if at.elapsed() < ttl {
                return models.clone();
            }
        }
        let asked = future::or(async { Some(self.ask_models(client).await) }, async {
            smol::Timer::after(ASK_TIMEOUT).await;
            None
        })
        .await;
        let models = match asked {
            Some(Ok(models)) => Some(models),
            Some(Err(e)) => {
                log::warn!("provider '{}': cannot list its models: {}", self.name, e.message);
                None
            }
            None => {
                log::warn!(
                    "provider '{}': listing its models took over {} s",
                    self.name,
                    ASK_TIMEOUT.as_secs()
                );
                None
            }
        };
        *last = Some((Instant::now(), models.clone()));
        models
    }

    async fn ask_models(&self, client: &Client) -> Result<Vec<Model>, ApiError> {
        // Never a caller's key: the list is shared by every caller.
        let req = super::openai::get(&self.base_url, "/models", self.api_key.as_deref());
        let once = RetryConfig {
            max_attempts: Some(1),
            ..RetryConfig::default()
        };
        let body = self.send(client, &req, &mut Budget::new(&once)).await?.bytes().await?;
        parse(&body).ok_or_else(|| {
            ApiError::bad_gateway(format!(
                "{}/models did not answer a model list ({{\"data\":[{{\"id\":…}}]}})",
                self.base_url
            ))
        })
    }
}

/// `{"data": [{"id", "created"?}, …]}`, as OpenAI, vLLM, llama.cpp and Ollama answer; ids that
/// are empty, too long or hold control characters are skipped.
fn parse(body: &[u8]) -> Option<Vec<Model>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let data = v.get("data")?.as_array()?;
    let models = data
        .iter()
        .filter_map(|m| {
            let id = m.get("id")?.as_str()?;
            let fits = !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(char::is_control);
            fits.then(|| Model {
                id: id.to_owned(),
                created: m.get("created").and_then(Value::as_u64).unwrap_or(0),
            })
        })
        .take(MAX_MODELS)
        .collect();
    Some(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_are_read_and_bounded() {
        let body = br#"{"object":"list","data":[{"id":"smollm2","created":1700000000,"owned_by":"me"},{"id":""},{"id":"a\nb"},{"id":7},{"nope":1},{"id":"smollm2-tools"}]}"#;
        let ids: Vec<String> = parse(body).unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["smollm2", "smollm2-tools"]);
        assert_eq!(parse(br#"{"data":[{"id":"x","created":5}]}"#).unwrap()[0].created, 5);
        for bad in [&b"<html>"[..], b"{}", br#"{"data":{}}"#, b"[]"] {
            assert!(parse(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(r#"{{"data":[{}]}}"#, vec![r#"{"id":"m"}"#; MAX_MODELS + 5].join(","));
        assert_eq!(parse(many.as_bytes()).unwrap().len(), MAX_MODELS);
        let long = format!(r#"{{"data":[{{"id":"{}"}}]}}"#, "x".repeat(MAX_ID + 1));
        assert!(parse(long.as_bytes()).unwrap().is_empty());
    }
}
