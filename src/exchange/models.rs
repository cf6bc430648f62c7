//! Memory's model calls ([`crate::memory::Models`]), made through the router as memory's own
//! client, charged to the tenant whose thread they serve.

use crate::config::RetryConfig;
use crate::error::ApiError;
use crate::ir::{content_text, tokens};
use crate::ir::{ChatRequest, Rest, Usage};
use crate::limits::Limiter;
use crate::memory::{self, Boxed, Call, CallError, Job};
use crate::metrics::{MemoryJob, Metrics};
use crate::providers::Provider;
use crate::router::{first_answer, Router};
use crate::upstream::{Client, UpstreamResponse, GAVE_WAY};
use crate::usage::Ledger;
use serde_json::Value;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The gateway's side of memory's seam: the router in force (shared with the app, so a reload
/// reaches memory's next call), the upstream client, and where memory's tokens are counted.
#[derive(Debug)]
pub(crate) struct MemoryModels {
    pub router: Arc<RwLock<Arc<Router>>>,
    pub client: Client,
    pub retry: RetryConfig,
    pub limiter: Arc<Limiter>,
    pub usage: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
}

impl MemoryModels {
    fn router(&self) -> Arc<Router> {
        self.router.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn answer(&self, call: Call<'_>) -> Result<(String, Usage), CallError> {
        let mut rest = Rest::new();
        let candidates = self.router().candidates(call.model, &mut rest)?;
        rest.insert("temperature".to_owned(), serde_json::json!(0.3));
        rest.insert("max_tokens".to_owned(), serde_json::json!(call.max_tokens));
        let mut req = ChatRequest {
            model: String::new(),
            messages: call.messages,
            stream: None,
            rest,
        };
        let sent = first_answer(&self.client, &self.retry, &candidates, |c| {
            req.model.clone_from(&c.route.model);
            // To an upstream with slots the call streams, so that giving way (hanging up)
            // stops the generation: servers stop a streamed one whose client is gone.
            let slots = c.route.provider.has_slots();
            req.stream = slots.then_some(true);
            let mut upstream = c.route.provider.chat_request(&req, None)?;
            upstream.gives_way = slots.then_some(call.give_way);
            Ok(upstream)
        })
        .await?;
        let provider = &sent.candidate.route.provider;
        let (text, usage) = if sent.response.is_event_stream() {
            read_stream(provider, &req, sent.response).await?
        } else {
            let answer = provider.chat_response(&sent.response.bytes().await?)?;
            let text = answer.choices.first().map(|c| content_text(&c.message.content));
            (text.unwrap_or_default(), answer.usage)
        };
        // A server that reports no usage in streams (llama-cpp-python): estimated, so memory's
        // calls still count against the key's tpm and in its usage.
        let usage = usage.unwrap_or_else(|| {
            let prompt = req.messages.iter().map(tokens::message).sum::<u64>();
            let completion = tokens::text(&text);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
                rest: Default::default(),
            }
        });
        let spent = usage.total_tokens;
        // Memory's calls run on the operator's keys for the tenant's thread: they count against its
        // tpm like its own requests, so tiny thresholds cannot buy unlimited model calls.
        self.limiter.charge(call.tenant, call.limits, spent);
        self.usage.record(crate::usage::Entry {
            key: call.tenant.to_owned(),
            provider: provider.name.clone(),
            model: sent.candidate.name.clone(),
            counts: crate::store::usage::Counts {
                memory_tokens: spent,
                ..Default::default()
            },
            ..Default::default()
        });
        Ok((text, usage))
    }
}

impl memory::Models for MemoryModels {
    fn window<'a>(&'a self, model: &'a str) -> Boxed<'a, Option<u64>> {
        Box::pin(async move {
            let route = self.router().resolve(model).ok()?;
            route.provider.context_window(&self.client, &route.model).await
        })
    }

    fn until_free<'a>(&'a self, model: &'a str, quiet: Duration) -> Boxed<'a, ()> {
        Box::pin(async move {
            // A model that is not routed fails in the call itself.
            let Ok(candidates) = self.router().candidates(model, &mut Rest::new()) else {
                return;
            };
            if let Some(first) = candidates.first() {
                first.route.provider.until_free(quiet).await;
            }
        })
    }

    fn call<'a>(&'a self, call: Call<'a>) -> Boxed<'a, Result<(String, Usage), CallError>> {
        Box::pin(self.answer(call))
    }

    fn ran(&self, job: Job, ok: bool) {
        let job = match job {
            Job::Observer => MemoryJob::Observer,
            Job::Reflector => MemoryJob::Reflector,
        };
        self.metrics.memory_run(job, ok);
    }
}

/// The text and usage of a streamed memory call's answer.
async fn read_stream(
    provider: &Provider,
    req: &ChatRequest,
    response: UpstreamResponse,
) -> Result<(String, Option<Usage>), CallError> {
    let mut decoder = provider.chat_decoder(req);
    let mut events = response.events();
    let mut text = String::new();
    let mut usage = None;
    loop {
        let event = match events.next().await {
            Ok(Some(event)) => event,
            Ok(None) if decoder.finished() => break,
            Ok(None) => {
                return Err(CallError::Failed(
                    "the memory call's stream ended before its answer did".to_owned(),
                ))
            }
            Err(_) if events.gave_way() => return Err(CallError::GaveWay),
            Err(why) => return Err(CallError::Failed(why)),
        };
        for chunk in decoder.event(&event)? {
            let delta = chunk.choices.first().and_then(|c| c.delta.get("content"));
            text.extend(delta.and_then(Value::as_str));
            usage = chunk.usage.or(usage);
        }
    }
    Ok((text, usage.or_else(|| decoder.usage())))
}

impl From<ApiError> for CallError {
    fn from(e: ApiError) -> CallError {
        if e.code.as_deref() == Some(GAVE_WAY) {
            return CallError::GaveWay;
        }
        CallError::Failed(e.message)
    }
}
