//! Model names to providers: `PROVIDER/REST` goes to provider PROVIDER as model REST.
//!
//! REST may hold more slashes (`openrouter/anthropic/claude-sonnet-4`). A name without a known
//! prefix goes to `default_provider` when one is set, whole (so `gpt-4o-mini` works as the
//! OpenAI SDK examples write it).
//!
//! A request may name fallbacks, tried in order when a route fails with a 503 or runs out of
//! retries ([`Router::candidates`]): `providerOptions.gateway.order` (the same model on other
//! providers, first), the body's `models` list (Vercel's and OpenRouter's convention), then the
//! config's `[fallbacks]` for the model. `providerOptions.gateway.only` limits the providers.

use crate::config::{Config, RetryConfig};
use crate::error::ApiError;
use crate::ir::Rest;
use crate::providers::Provider;
use crate::upstream::retry::Budget;
use crate::upstream::{Client, UpstreamRequest, UpstreamResponse};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Router {
    providers: BTreeMap<String, Arc<Provider>>,
    default: Option<String>,
    /// `[fallbacks]`: model name as clients write it → names to try after it.
    fallbacks: BTreeMap<String, Vec<String>>,
}

/// One route to try, with the model name its answer carries back.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// What the client asked for (the first candidate), else `provider/model` of the fallback.
    pub name: String,
    pub route: Route,
    /// Whether this is the provider the caller chose (the one its model names): the only one a
    /// BYOK key may go to. Fallbacks elsewhere use their configured keys.
    pub chosen: bool,
}

impl Candidate {
    /// The caller's own provider key if this candidate may carry it; `None` (the provider's
    /// configured key) otherwise.
    pub fn byok<'a>(&self, byok: Option<&'a str>) -> Option<&'a str> {
        byok.filter(|_| self.chosen)
    }
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
            fallbacks: config.fallbacks.clone(),
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

    /// The routes for `asked`, fallbacks included, in the order to try them. Takes the request's
    /// own fallback fields (`models`, `providerOptions`) out of `rest`: they are memgate's to act
    /// on, and an upstream would refuse or re-interpret them.
    pub fn candidates(&self, asked: &str, rest: &mut Rest) -> Result<Vec<Candidate>, ApiError> {
        let listed = rest.remove("models");
        let options = rest.remove("providerOptions");
        let gateway = options.as_ref().and_then(|o| o.get("gateway"));
        let names = |key: &str| -> Result<Option<Vec<String>>, ApiError> {
            match gateway.and_then(|g| g.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => strings(v).map(Some).ok_or_else(|| {
                    ApiError::invalid_param(
                        &format!("providerOptions.gateway.{key}"),
                        "must be an array of provider names",
                    )
                }),
            }
        };
        let (order, only) = (names("order")?, names("only")?);
        let base = asked
            .split_once('/')
            .filter(|(p, _)| self.providers.contains_key(*p))
            .map_or(asked, |(_, m)| m);
        // The model's name without its prefix on provider `p`; providers this gateway does not
        // have (a `vertex` written for another gateway) are skipped, as unavailable ones are.
        let on = |p: &str, list: &str| {
            let Some(provider) = self.providers.get(p) else {
                log::debug!("providerOptions.gateway.{list} names provider '{p}', which is not configured");
                return None;
            };
            Some(Candidate {
                name: format!("{p}/{base}"),
                route: Route {
                    provider: provider.clone(),
                    model: provider.upstream_model(base),
                },
                chosen: false,
            })
        };
        let mut all: Vec<Candidate> = order.iter().flatten().filter_map(|p| on(p, "order")).collect();
        let mut chosen = None;
        match self.resolve(asked) {
            Ok(route) => {
                chosen = Some(route.provider.clone());
                all.push(Candidate {
                    name: asked.to_owned(),
                    route,
                    chosen: false,
                });
            }
            // A name no route takes (`gpt-4o-mini` without default_provider) is tried as it is on
            // the providers the request lists.
            Err(e) if order.is_some() || only.is_some() => {
                all.extend(only.iter().flatten().filter_map(|p| on(p, "only")));
                if all.is_empty() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        let listed = match &listed {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => {
                strings(v).ok_or_else(|| ApiError::invalid_param("models", "models must be an array of model names"))?
            }
        };
        let configured = self.fallbacks.get(asked).into_iter().flatten();
        for name in listed.iter().chain(configured) {
            match self.resolve(name) {
                Ok(route) => all.push(Candidate {
                    name: name.clone(),
                    route,
                    chosen: false,
                }),
                Err(e) => log::debug!("fallback {name:?} skipped: {}", e.message),
            }
        }
        // The caller chose the provider its model names; a name that names none (tried on the
        // listed providers) chose the first of them.
        let chosen = chosen.unwrap_or_else(|| all[0].route.provider.clone());
        for c in &mut all {
            c.chosen = Arc::ptr_eq(&c.route.provider, &chosen);
        }
        let allowed = |c: &Candidate| only.as_ref().is_none_or(|o| o.contains(&c.route.provider.name));
        let mut out: Vec<Candidate> = Vec::new();
        for c in all {
            let seen = out
                .iter()
                .any(|o| Arc::ptr_eq(&o.route.provider, &c.route.provider) && o.route.model == c.route.model);
            if !seen && allowed(&c) {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(ApiError::invalid_param(
                "providerOptions.gateway.only",
                format!("no route for {asked:?} uses an allowed provider"),
            ));
        }
        Ok(out)
    }

    /// Every provider, by name.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.values()
    }
}

/// What [`first_answer`] got: the response, the candidate that gave it, and the attempts made
/// over all candidates.
#[derive(Debug)]
pub struct Answer<'c> {
    pub response: UpstreamResponse,
    pub candidate: &'c Candidate,
    pub attempts: u32,
}

/// Whether a route's failure lets the next candidate try: an overloaded or failing upstream
/// (after its retries), not a request the next one would refuse as well.
fn falls_back(e: &ApiError) -> bool {
    // A memory call that gave way to a client's request stops there (see `upstream::slots`).
    matches!(e.status, 429 | 500 | 502 | 503 | 504) && e.code.as_deref() != Some(crate::upstream::GAVE_WAY)
}

/// Sends the request `build` makes for each candidate in turn, each with its own retries, until
/// one answers; a failure that does not [`falls_back`] ends the search at once.
pub async fn first_answer<'c>(
    client: &Client,
    retry: &RetryConfig,
    candidates: &'c [Candidate],
    mut build: impl FnMut(&Candidate) -> Result<UpstreamRequest, ApiError>,
) -> Result<Answer<'c>, ApiError> {
    let mut attempts = 0;
    let mut tried = candidates.iter().peekable();
    while let Some(c) = tried.next() {
        let req = build(c)?;
        let mut budget = Budget::new(retry);
        let sent = c.route.provider.send(client, &req, &mut budget).await;
        attempts += budget.made();
        match (sent, tried.peek()) {
            (Ok(response), _) => {
                return Ok(Answer {
                    response,
                    candidate: c,
                    attempts,
                })
            }
            (Err(e), Some(next)) if falls_back(&e) => {
                log::warn!("{} failed ({}); falling back to {}", c.name, e, next.name);
            }
            (Err(e), _) => return Err(e),
        }
    }
    Err(ApiError::internal("no route to try"))
}

/// A JSON array of strings, or `None`.
fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect()
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
