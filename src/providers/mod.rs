//! Provider adapters: the IR in, a provider's wire format out, and back.
//!
//! Each provider kind has its own module and keeps its quirks there. [`Provider`] is the one
//! interface the API layer calls; it dispatches on the kind.

mod openai;

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::ApiError;
use crate::ir::{ChatChunk, ChatRequest, ChatResponse};
use crate::upstream::UpstreamRequest;
use serde::Serialize;

/// A configured upstream, ready to build requests.
#[derive(Debug)]
pub struct Provider {
    /// The table name in `[providers.NAME]`, which is also the model prefix.
    pub name: String,
    pub kind: ProviderKind,
    base_url: String,
    api_key: Option<String>,
    /// Model names listed by `/v1/models`.
    pub models: Vec<String>,
}

impl Provider {
    pub fn new(name: &str, cfg: &ProviderConfig) -> Provider {
        Provider {
            name: name.to_owned(),
            kind: cfg.kind,
            base_url: cfg.base_url().unwrap_or_default(),
            api_key: cfg.api_key(),
            models: cfg.models.clone(),
        }
    }

    /// The credential sent upstream: the caller's own (BYOK) if given, else the configured one.
    fn credential<'a>(&'a self, byok: Option<&'a str>) -> Option<&'a str> {
        byok.or(self.api_key.as_deref())
    }

    fn unsupported(&self) -> ApiError {
        ApiError::not_implemented(format!(
            "provider '{}' is of kind \"{}\", which this build cannot translate yet; use an OpenAI-compatible \
             endpoint (kind = \"openai\") for it meanwhile",
            self.name,
            self.kind.name()
        ))
    }

    /// A chat-completions request for this provider; `req.model` is already the upstream name.
    pub fn chat_request(&self, req: &ChatRequest, byok: Option<&str>) -> Result<UpstreamRequest, ApiError> {
        match self.kind {
            ProviderKind::Openai => Ok(openai::post(
                &self.base_url,
                "/chat/completions",
                self.credential(byok),
                req,
            )),
            _ => Err(self.unsupported()),
        }
    }

    /// A complete chat answer from the provider's body.
    pub fn chat_response(&self, body: &[u8]) -> Result<ChatResponse, ApiError> {
        match self.kind {
            ProviderKind::Openai => openai::parse(body),
            _ => Err(self.unsupported()),
        }
    }

    /// One streamed chunk from a provider event's data; `None` for events that carry no chunk.
    pub fn chat_chunk(&self, data: &str) -> Option<ChatChunk> {
        match self.kind {
            ProviderKind::Openai => openai::parse(data.as_bytes()).ok(),
            _ => None,
        }
    }

    /// A request forwarded in the OpenAI format itself (`/responses`, `/embeddings`).
    pub fn passthrough(
        &self,
        path: &str,
        body: &impl Serialize,
        byok: Option<&str>,
    ) -> Result<UpstreamRequest, ApiError> {
        match self.kind {
            ProviderKind::Openai => Ok(openai::post(&self.base_url, path, self.credential(byok), body)),
            _ => Err(self.unsupported()),
        }
    }
}
