//! `POST /v1/chat/completions`, and the exchange every format translated to chat goes through.

use super::chunks::{estimate, Chunks, Encode, Prompt};
use super::relay::relay;
use super::{parse_body, routes, send, Ctx};
use crate::error::ApiError;
use crate::http::{json_response, sse};
use crate::ir::{ChatChunk, ChatRequest, ChatResponse, Usage};
use crate::memory::{Memory, Turn};
use crate::router::Candidate;
use http_types::Response;

pub(super) async fn handle(ctx: &mut Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let (asked, candidates) = routes(ctx, &mut req.model, &mut req.rest)?;
    match exchange(ctx, req, asked, &candidates, ChatEncoder).await? {
        Answered::Streaming(res) => Ok(res),
        Answered::Complete(answer) => Ok(json_response(200, &answer)),
    }
}

/// What an exchange produced: a stream already relaying, or a whole answer to render.
pub(super) enum Answered {
    Streaming(Response),
    Complete(ChatResponse),
}

/// Runs a chat request (from any inbound format) through memory, the providers (fallbacks
/// included) and back. `asked` is the model name the client used: memory records it, and the
/// answer carries it, or the fallback's name if one answered. A stream's chunks are rendered
/// by `encoder`.
pub(super) async fn exchange(
    ctx: &mut Ctx,
    mut req: ChatRequest,
    asked: String,
    candidates: &[Candidate],
    encoder: impl Encode,
) -> Result<Answered, ApiError> {
    let turn = match &ctx.thread {
        Some(at) => {
            let (messages, turn) = Memory::begin(
                &ctx.app.memory,
                &ctx.payer(),
                at,
                std::mem::take(&mut req.messages),
                &asked,
                &req.rest,
            )
            .await?;
            req.messages = messages;
            Some(turn)
        }
        None => None,
    };
    exchange_begun(ctx, req, turn, candidates, encoder).await
}

/// [`exchange`] for a request whose memory turn has begun (`req` holds its context already).
pub(super) async fn exchange_begun(
    ctx: &mut Ctx,
    mut req: ChatRequest,
    turn: Option<Turn>,
    candidates: &[Candidate],
    encoder: impl Encode,
) -> Result<Answered, ApiError> {
    let byok = ctx.caller.byok.clone();
    let (res, answered) = send(ctx, candidates, |c| {
        req.model.clone_from(&c.route.model);
        c.route.provider.chat_request(&req, c.byok(byok.as_deref()))
    })
    .await?;
    let provider = &answered.route.provider;
    if req.is_stream() && res.is_event_stream() {
        let decoder = provider.chat_decoder(&req);
        let t = Chunks::new(decoder, encoder, answered.name.clone(), Prompt::of(req));
        return Ok(Answered::Streaming(relay(ctx, res, t, turn)));
    }
    let mut answer = provider.chat_response(&res.bytes().await?)?;
    answer.model.clone_from(&answered.name);
    // A server that reports no usage: estimated, so usage, limits and metrics count the answer.
    let estimated = answer.usage.is_none();
    if estimated {
        let message = answer.choices.first().map(|c| &c.message);
        answer.usage = Some(estimate(&Prompt::of(req), message));
    }
    if let Some(log) = &mut ctx.log {
        log.usage.clone_from(&answer.usage);
        log.estimated = estimated;
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
    fn chunk(&mut self, chunk: &ChatChunk, _opening: Option<&Usage>) -> Vec<Vec<u8>> {
        vec![sse::frame(None, &serde_json::to_string(chunk).unwrap_or_default())]
    }

    fn finish(&mut self, _usage: Option<&Usage>) -> Vec<Vec<u8>> {
        vec![sse::frame(None, "[DONE]")]
    }

    fn error_frame(&self, e: &ApiError) -> Vec<u8> {
        sse::frame(None, &e.body().to_string())
    }
}
