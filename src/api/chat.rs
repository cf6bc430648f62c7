//! `POST /v1/chat/completions`.

use super::relay::{relay, Translate};
use super::{parse_body, route, send, Ctx};
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{ChatRequest, Usage};
use crate::providers::Provider;
use http_types::Response;
use std::sync::Arc;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let (asked, route) = route(ctx, &mut req.model)?;
    let upstream = route.provider.chat_request(&req, ctx.caller.byok.as_deref())?;
    let res = send(ctx, &upstream).await?;
    if req.is_stream() && res.is_event_stream() {
        let t = ChatStream {
            provider: route.provider,
            model: asked,
            done: false,
            usage: None,
        };
        return Ok(relay(ctx, res, t));
    }
    let mut answer = route.provider.chat_response(&res.bytes().await?)?;
    answer.model = asked;
    if let Some(log) = &mut ctx.log {
        log.usage = answer.usage;
    }
    Ok(json_response(200, &answer))
}

/// Chat chunks in, chat chunks out, with `model` rewritten to the name the client used.
struct ChatStream {
    provider: Arc<Provider>,
    model: String,
    done: bool,
    usage: Option<Usage>,
}

impl Translate for ChatStream {
    fn event(&mut self, ev: sse::Event) -> Vec<Vec<u8>> {
        if ev.data == "[DONE]" {
            self.done = true;
            return vec![sse::frame(None, "[DONE]")];
        }
        match self.provider.chat_chunk(&ev.data) {
            Some(mut chunk) => {
                chunk.model.clone_from(&self.model);
                if chunk.usage.is_some() {
                    self.usage = chunk.usage;
                }
                vec![sse::frame(None, &serde_json::to_string(&chunk).unwrap_or_default())]
            }
            // Not a chunk (an error object, a vendor extension): the client sees it verbatim.
            None => vec![sse::frame(ev.event.as_deref(), &ev.data)],
        }
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
