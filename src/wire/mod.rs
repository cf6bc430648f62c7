//! The wire formats memgate speaks, translated to and from the [`crate::ir`] as pure functions.

pub(crate) mod anthropic;
pub(crate) mod common;
pub(crate) mod gemini;
pub(crate) mod openai;
pub(crate) mod responses;
mod schema;
