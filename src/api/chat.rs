//! `POST /v1/chat/completions`, and the exchange every format translated to chat goes through.

use super::chunks::{Chunks, Encode};
use super::relay::relay;
use super::{parse_body, route, send, Ctx};
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{ChatChunk, ChatRequest, ChatResponse, Usage};
use crate::memory::Memory;
use crate::router::Route;
use http_types::Response;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let (asked, route) = route(ctx, &mut req.model)?;
    match exchange(ctx, req, asked, route, ChatEncoder).await? {
        Answered::Streaming(res) => Ok(res),
        Answered::Complete(answer) => Ok(json_response(200, &answer)),
    }
}

/// What an exchange produced: a stream already relaying, or a whole answer to render.
pub(super) enum Answered {
    Streaming(Response),
    Complete(ChatResponse),
}

/// Runs a chat request (from any inbound format) through memory, the provider and back.
/// `asked` is the model name the client used, which the answer carries; a stream's chunks are
/// rendered by `encoder`.
pub(super) async fn exchange(
    ctx: &mut Ctx,
    mut req: ChatRequest,
    asked: String,
    route: Route,
    encoder: impl Encode,
) -> Result<Answered, ApiError> {
    let turn = match &ctx.thread {
        Some(at) => {
            let (messages, turn) =
                Memory::begin(&ctx.app, &ctx.caller, at, std::mem::take(&mut req.messages), &asked).await?;
            req.messages = messages;
            Some(turn)
        }
        None => None,
    };
    let upstream = route.provider.chat_request(&req, ctx.caller.byok.as_deref())?;
    let res = send(ctx, &route.provider, &upstream).await?;
    if req.is_stream() && res.is_event_stream() {
        let t = Chunks::new(route.provider.chat_decoder(&req), encoder, asked);
        return Ok(Answered::Streaming(relay(ctx, res, t, turn)));
    }
    let mut answer = route.provider.chat_response(&res.bytes().await?)?;
    answer.model = asked;
    if let Some(log) = &mut ctx.log {
        log.usage.clone_from(&answer.usage);
    }
    if let Some(turn) = turn {
        turn.finish(answer.choices.first().map(|c| c.message.clone()), true)
            .await?;
    }
    Ok(Answered::Complete(answer))
}

/// Chat chunks out as they are, then `data: [DONE]`.
pub(super) struct ChatEncoder;

impl Encode for ChatEncoder {
    fn chunk(&mut self, chunk: &ChatChunk, _known: Option<&Usage>) -> Vec<Vec<u8>> {
        vec![sse::frame(None, &serde_json::to_string(chunk).unwrap_or_default())]
    }

    fn finish(&mut self, _usage: Option<&Usage>) -> Vec<Vec<u8>> {
        vec![sse::frame(None, "[DONE]")]
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        sse::frame(None, &e.body().to_string())
    }
}
