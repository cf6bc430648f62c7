//! memgate: a small self-hosted LLM gateway with observational memory.
//!
//! A request flows through the modules in this order, and its answer back:
//! `http` (connections, bodies, SSE) → `api` (one handler per endpoint, OpenAI's and Anthropic's
//! formats: parse into the `ir`, render back) → `memory` (context in front, observations after)
//! → `router` (model name → provider and fallbacks) → `providers` (endpoint and auth; the IR in
//! the provider's format by `wire`) → `upstream` (pooled HTTP/TLS client, retries). `exchange`
//! gives memory its model calls. `store` holds the redb database; `auth` decides who calls;
//! `admin` lets the CLI manage keys and memory while the server runs. The modules sit in layers
//! (README, "Layout"), which `tests/layers.rs` checks.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod eval;
pub(crate) mod exchange;
pub mod http;
pub mod ir;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod providers;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod store;
pub mod tasks;
pub mod upstream;
pub mod usage;
pub(crate) mod wire;
