//! Model names to providers: `PROVIDER/REST` goes to provider PROVIDER as model REST.
//!
//! REST may hold more slashes (`openrouter/anthropic/claude-sonnet-4`). A name without a known
//! prefix goes to `default_provider` when one is set, whole (so `gpt-4o-mini` works as the
//! OpenAI SDK examples write it).

use crate::config::Config;
use crate::error::ApiError;
use crate::providers::Provider;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Router {
    providers: BTreeMap<String, Arc<Provider>>,
    default: Option<String>,
}

/// Where one request goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub provider: Arc<Provider>,
    /// The model name the provider knows.
    pub model: String,
}

impl Router {
    /// Fails only when a provider cannot be set up (a replay provider's fixtures do not load).
    pub fn new(config: &Config) -> Result<Router, String> {
        let providers = config
            .providers
            .iter()
            .map(|(n, c)| Ok((n.clone(), Arc::new(Provider::new(n, c)?))))
            .collect::<Result<_, String>>()?;
        Ok(Router {
            providers,
            default: config.default_provider.clone(),
        })
    }

    pub fn resolve(&self, model: &str) -> Result<Route, ApiError> {
        if model.is_empty() {
            return Err(ApiError::invalid_param("model", "model must not be empty"));
        }
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(p) = self.providers.get(prefix) {
                if rest.is_empty() {
                    return Err(ApiError::model_not_found(format!(
                        "model {model:?} names provider '{prefix}' but no model after the '/'"
                    )));
                }
                return Ok(Route {
                    provider: p.clone(),
                    model: p.upstream_model(rest),
                });
            }
        }
        // Unprefixed names go to the default provider; an unknown prefix only when the default
        // provider lists the full name (as vLLM's `org/model` names are).
        if let Some(p) = self.default.as_ref().and_then(|d| self.providers.get(d)) {
            if !model.contains('/') || p.models.iter().any(|m| m == model) {
                return Ok(Route {
                    provider: p.clone(),
                    model: p.upstream_model(model),
                });
            }
        }
        let names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        let prefix = model.split_once('/').map_or(model, |(p, _)| p);
        Err(ApiError::model_not_found(format!(
            "model {model:?} is not routed: no provider '{prefix}' is configured. Use PROVIDER/MODEL with one of: {}{}",
            if names.is_empty() {
                "(none configured; add [providers.NAME] to memgate.toml)".to_owned()
            } else {
                names.join(", ")
            },
            if self.default.is_none() {
                "; or set default_provider for unprefixed names"
            } else {
                ""
            },
        )))
    }

    /// Every listed model as `(id, owner)`, with its provider prefix.
    pub fn models(&self) -> Vec<(String, String)> {
        self.providers
            .values()
            .flat_map(|p| {
                p.models
                    .iter()
                    .map(move |m| (format!("{}/{m}", p.name), p.name.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(default: Option<&str>) -> Router {
        let mut text = String::from("[providers.openrouter]\nkind = \"openai\"\n[providers.anthropic]\nkind = \"anthropic\"\naliases = { \"claude-sonnet-4\" = \"claude-sonnet-4-20250514\" }\n[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"meta-llama/Llama-3.1-8B\"]\n");
        if let Some(d) = default {
            text = format!("default_provider = \"{d}\"\n{text}");
        }
        Router::new(&Config::parse(&text).unwrap()).unwrap()
    }

    #[test]
    fn routing_table() {
        let r = router(Some("local"));
        let cases = [
            (
                "openrouter/anthropic/claude-sonnet-4",
                Some(("openrouter", "anthropic/claude-sonnet-4")),
            ),
            ("local/qwen3", Some(("local", "qwen3"))),
            (
                "anthropic/claude-sonnet-4",
                Some(("anthropic", "claude-sonnet-4-20250514")),
            ),
            ("anthropic/claude-opus-4-1", Some(("anthropic", "claude-opus-4-1"))),
            ("gpt-4o-mini", Some(("local", "gpt-4o-mini"))),
            // An unknown prefix reaches the default only when it lists the full name.
            ("meta-llama/Llama-3.1-8B", Some(("local", "meta-llama/Llama-3.1-8B"))),
            ("nosuch/model", None),
            ("openrouter/", None),
            ("", None),
        ];
        for (model, want) in cases {
            let got = r.resolve(model).ok().map(|rt| (rt.provider.name.clone(), rt.model));
            assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())), "{model}");
        }
    }

    #[test]
    fn unknown_provider_is_model_not_found_listing_providers() {
        let e = router(None).resolve("nosuch/x").unwrap_err();
        assert_eq!((e.status, e.code.as_deref()), (400, Some("model_not_found")));
        assert!(e.message.contains("anthropic, local, openrouter"), "{}", e.message);
        assert!(router(None).resolve("gpt-4o").is_err());
    }
}
