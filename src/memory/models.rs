//! What memory needs from the rest of the gateway to run the observer and reflector: model
//! calls, model windows, a free upstream, and a count of its runs. Memory owns this seam, so it
//! knows nothing of routers, providers or connections; the exchange layer implements it, and
//! tests script it.

use crate::ir::{Message, Usage};
use crate::limits::Limits;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A future a [`Models`] method returns.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The models memory calls, through whatever routes them.
pub trait Models: Send + Sync + std::fmt::Debug {
    /// The context window of `model` (as a client names it, `provider/model`), if known.
    fn window<'a>(&'a self, model: &'a str) -> Boxed<'a, Option<u64>>;

    /// Returns once `model`'s upstream may take a memory call: at once, unless it counts its
    /// slots; then when one is free and clients have left it alone for `quiet`.
    fn until_free<'a>(&'a self, model: &'a str, quiet: Duration) -> Boxed<'a, ()>;

    /// One plain chat call; the answer's text and usage (estimated when the upstream reports
    /// none). Its tokens are charged to the call's tenant.
    fn call<'a>(&'a self, call: Call<'a>) -> Boxed<'a, Result<(String, Usage), CallError>>;

    /// An observer or reflector run ended, well (`ok`) or not: for metrics.
    fn ran(&self, job: Job, ok: bool);
}

/// One observer or reflector call.
#[derive(Debug)]
pub struct Call<'a> {
    pub model: &'a str,
    pub messages: Vec<Message>,
    pub max_tokens: u64,
    /// On an upstream with slots: how long a client's request waits behind the call before
    /// it hangs up.
    pub give_way: Duration,
    /// The tenant of the thread the call serves: its tokens count in this tenant's usage and
    /// against its token limit (`tpm`), so tiny thresholds cannot buy unlimited model calls.
    pub tenant: &'a str,
    pub limits: Limits,
}

/// Why a memory call brought no answer.
#[derive(Debug)]
pub enum CallError {
    Failed(String),
    /// It hung up to free its upstream slot for a client's request: not the model's failure.
    GaveWay,
}

/// Memory's two kinds of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Observer,
    Reflector,
}
