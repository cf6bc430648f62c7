//! `POST /v1/responses`, the OpenAI Responses API: passed through to a provider that serves it,
//! translated through chat ([`responses_chat`]) for one that does not.

use super::chat::{exchange, exchange_begun, Answered};
use super::relay::{relay, Translate};
use super::responses_chat::ResponsesEncoder;
use super::{parse_body, routes, send, Ctx};
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{Message, PassthroughRequest, Usage};
use crate::memory::Memory;
use crate::wire::responses;
use crate::wire::responses::items::{self, OutputAccumulator};
use http_types::Response;
use serde_json::Value;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: PassthroughRequest = parse_body(body)?;
    let stored = ["previous_response_id", "conversation"]
        .into_iter()
        .find(|k| req.rest.get(*k).is_some_and(|v| !v.is_null()));
    if let Some(field) = stored {
        check_stored(ctx, field)?;
    }
    let (asked, mut candidates) = routes(ctx, &mut req.model, &mut req.rest)?;
    if let Some(field) = stored {
        // What is stored under the caller's key is read with that key only: no fallback to a
        // provider that would get its configured key.
        candidates.retain(|c| c.chosen);
        if candidates.is_empty() {
            return Err(ApiError::invalid_param(
                field,
                format!("{field} must go to the provider the model names, which providerOptions.gateway.only excludes"),
            ));
        }
    }
    // Passed through only when every route can take it as it is; otherwise all go through chat
    // (an OpenAI-compatible route speaks chat too), so a fallback of another kind still works.
    if !candidates.iter().all(|c| c.route.provider.speaks_responses()) {
        let chat = responses::to_chat(req)?;
        return through_chat(exchange(ctx, chat, asked, &candidates, ResponsesEncoder::new()).await?);
    }
    // Memory works on chat messages: the input goes through them and back into items.
    // (`instructions` stays as it is: it is the client's own system message.)
    let turn = match &ctx.thread {
        Some(at) => {
            let input = req.rest.get("input").unwrap_or(&Value::Null);
            let messages = items::input_to_messages(input)?;
            let (messages, turn) =
                Memory::begin(&ctx.app.memory, &ctx.payer(), at, messages, &asked, &req.rest).await?;
            req.rest
                .insert("input".to_owned(), Value::Array(items::messages_to_input(&messages)));
            Some(turn)
        }
        None => None,
    };
    let byok = ctx.caller.byok.clone();
    let mut tried = None;
    let sent = send(ctx, &candidates, |c| {
        tried = Some(c.route.provider.clone());
        req.model.clone_from(&c.route.model);
        Ok(c.route
            .provider
            .passthrough("/responses", &req, c.byok(byok.as_deref())))
    })
    .await;
    let (res, answered) = match sent {
        Ok(answer) => answer,
        // A server without the Responses API (llama-cpp-python, Ollama): the same request
        // through chat, now and from now on, with memory's context and turn as they are.
        Err(e) if tried.is_some_and(|p| p.learns_no_responses(&e, stored.is_some())) => {
            let chat = responses::to_chat(req)?;
            let answered = exchange_begun(ctx, chat, turn, &candidates, ResponsesEncoder::new()).await?;
            return through_chat(answered);
        }
        Err(e) => return Err(e),
    };
    if req.stream == Some(true) && res.is_event_stream() {
        return Ok(relay(
            ctx,
            res,
            ResponseStream {
                model: answered.name.clone(),
                done: false,
                usage: None,
                output: OutputAccumulator::default(),
            },
            turn,
        ));
    }
    let bytes = res.bytes().await?;
    let mut answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_gateway(format!("upstream sent an unreadable Responses body: {e}")))?;
    set_model(&mut answer, &answered.name);
    if let Some(log) = &mut ctx.log {
        log.usage = answer.get("usage").and_then(Usage::from_value);
    }
    if let Some(turn) = turn {
        turn.finish(items::output_to_message(&answer), true).await?;
    }
    Ok(json_response(200, &answer))
}

/// A Responses answer made through chat, as the client gets it.
fn through_chat(answered: Answered) -> Result<Response, ApiError> {
    Ok(match answered {
        Answered::Streaming(res) => res,
        Answered::Complete(answer) => json_response(200, &responses::from_chat(&answer)),
    })
}

/// `previous_response_id` and `conversation` read responses the provider stored under the key
/// that made them. Under the operator's shared key every tenant's would be reachable, so they
/// need the caller's own key (BYOK); and with memory on, the history would go twice.
fn check_stored(ctx: &Ctx, field: &str) -> Result<(), ApiError> {
    if ctx.thread.is_some() {
        return Err(ApiError::invalid_param(
            field,
            format!(
                "{field} cannot be combined with x-thread-id/x-resource-id: memory already sends the thread's \
                 history, and the provider would add its stored one again. Use one or the other"
            ),
        ));
    }
    if ctx.caller.byok.is_none() {
        return Err(ApiError::invalid_param(
            field,
            format!(
                "{field} reads responses the provider stored under the key that made them; memgate would send \
                 its operator's shared key, under which every caller's stored responses are reachable. Send \
                 your own provider key (BYOK: the gateway key in X-Memory-Gateway-Authorization, your \
                 provider key in Authorization), or let memgate keep the conversation with x-thread-id and \
                 x-resource-id"
            ),
        ));
    }
    Ok(())
}

fn set_model(response: &mut Value, model: &str) {
    if let Some(m) = response.get_mut("model") {
        *m = Value::String(model.to_owned());
    }
}

/// Responses events pass through in order; the `response` object they carry gets the client's
/// model name. The stream is complete once a terminal event (completed, failed, incomplete) came.
struct ResponseStream {
    model: String,
    done: bool,
    usage: Option<Usage>,
    output: OutputAccumulator,
}

impl Translate for ResponseStream {
    fn event(&mut self, ev: sse::Event) -> Result<Vec<Vec<u8>>, ApiError> {
        let Ok(mut data) = serde_json::from_str::<Value>(&ev.data) else {
            return Ok(vec![sse::frame(ev.event.as_deref(), &ev.data)]);
        };
        let kind = ev
            .event
            .clone()
            .or_else(|| data.get("type").and_then(Value::as_str).map(str::to_owned));
        if let Some(r) = data.get_mut("response") {
            set_model(r, &self.model);
            if let Some(u) = r.get("usage").and_then(Usage::from_value) {
                self.usage = Some(u);
            }
        }
        self.output.event(kind.as_deref().unwrap_or_default(), &data);
        if matches!(
            kind.as_deref(),
            Some("response.completed" | "response.failed" | "response.incomplete" | "error")
        ) {
            self.done = true;
        }
        Ok(vec![sse::frame(ev.event.as_deref(), &data.to_string())])
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    fn answer(&self) -> Option<Message> {
        self.output.message()
    }
}
