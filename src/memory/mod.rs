//! Observational memory: threads remembered across requests, old turns compressed into dated
//! observations by an observer model, observations condensed by a reflector model.
//!
//! A request with `x-thread-id` and `x-resource-id` becomes a [`Turn`]: [`Memory::begin`]
//! swaps the client's messages for the assembled context (see `context`), and
//! [`Turn::finish`] stores the new messages with the answer before the client sees the end of
//! it. Past `message_tokens` of unobserved messages, a background observer run folds the
//! oldest into observations (see `observer`); past `observation_tokens` of observations, the
//! reflector condenses them (see `reflector`). Neither ever delays or fails a request, except
//! that a thread far past its threshold (1.2×) is observed before forwarding, as OM's
//! `blockAfter` does, so contexts stay bounded when the observer falls behind.
//!
//! Memory calls models only through its own [`Models`] trait, given to [`Memory::new`]: it
//! knows nothing of routers, providers or connections (the exchange layer implements it).

mod context;
pub mod lines;
mod models;
mod observer;
mod reflector;
#[cfg(test)]
mod scripted;

use crate::clock;
use crate::config::{Config, MemoryScope};
use crate::error::ApiError;
use crate::ir::{tokens, Message, Usage};
use crate::limits::Limits;
use crate::store::{observations, quota, threads, NewMessage, Scope, Store, StoreError, StoredMessage, ThreadRecord};
use crate::tasks::Tasks;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use context::PREAMBLE;
pub use models::{Boxed, Call, CallError, Job, Models};

/// OM's defaults.
const MESSAGE_TOKENS: u64 = 30_000;
const OBSERVATION_TOKENS: u64 = 40_000;
/// Past this multiple of `message_tokens`, a request waits for observation (OM's blockAfter).
const BLOCK_AFTER: f64 = 1.2;
/// The share of `message_tokens` kept as raw recent messages after an observation.
const TAIL_SHARE: f64 = 0.2;
/// With a known context window, `message_tokens` and `observation_tokens` are capped to these
/// shares of it, so unobserved messages, observations and the answer fit together.
const MESSAGE_SHARE: f64 = 0.4;
const OBSERVATION_SHARE: f64 = 0.25;
/// The share of the window kept for the answer when the request sets no `max_tokens`.
const ANSWER_SHARE: f64 = 0.2;
/// A twentieth of the window stays free for what the estimate cannot see: the server's chat
/// template (a default system prompt, role markers) and text its tokenizer splits finer.
const MARGIN_DIVISOR: u64 = 20;
/// The observer prompt's own words around the transcript (headings, task).
const PROMPT_FRAMING: u64 = 100;
/// Resource scope: how much of the resource's other threads the memory message shows.
const OTHER_THREADS: usize = 3;
const OTHER_MESSAGES: usize = 8;
const OTHER_TOKENS: u64 = 1500;
/// How long one observer or reflector call may take by default.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request past blockAfter waits for observation by default.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How long a client's request waits behind a memory call on an upstream with `slots`.
const GIVE_WAY: Duration = Duration::from_secs(1);
/// How long clients leave a server with slots alone before memory calls it.
const QUIET: Duration = Duration::from_secs(3);
/// Buffered observation's step, as a share of `message_tokens` (Mastra's `bufferTokens`).
const BUFFER_SHARE: f64 = 0.2;
/// Waits after a failed observer or reflector run, doubling per failure up to the cap.
const RETRY_FIRST: Duration = Duration::from_secs(15);
const RETRY_CAP: Duration = Duration::from_secs(600);

/// The `[memory]` settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: the model of the request that triggered the run.
    pub observer_model: Option<String>,
    pub reflector_model: Option<String>,
    pub message_tokens: u64,
    pub observation_tokens: u64,
    pub scope: MemoryScope,
    /// `None`: relative to each call's input (see [`Settings::output_bound`]).
    pub max_output_tokens: Option<u64>,
    pub call_timeout: Duration,
    pub max_wait: Duration,
    pub give_way: Duration,
    pub quiet: Duration,
    /// 0: no buffered observation.
    pub buffer_share: f64,
}

impl Settings {
    /// The `max_tokens` of a memory call with `input` tokens: the configured bound, else half
    /// the input within 256..`cap` (an observation or reflection is shorter than its input,
    /// and the checks refuse one that is not).
    fn output_bound(&self, input: u64, cap: u64) -> u64 {
        self.max_output_tokens.unwrap_or_else(|| (input / 2).clamp(256, cap))
    }
}

/// Memory: its database, its settings, the models it calls, and which runs are under way.
#[derive(Debug)]
pub struct Memory {
    pub settings: Settings,
    store: Store,
    models: Arc<dyn Models>,
    /// One lock per observing thread / reflecting scope: a run holds it, so runs never overlap
    /// and a request past `blockAfter` can wait for the run under way.
    locks: Mutex<HashMap<String, Arc<smol::lock::Mutex<()>>>>,
    /// Failed runs: how many in a row, and not before when to try again.
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
    /// Observer runs started after a request: shutdown waits for them, then cancels them.
    background: Tasks,
    /// Buffered observation: observations made ahead of the threshold, per thread (observe
    /// key), oldest first, activated when the thread reaches it. Kept in memory only: after
    /// a restart the messages are simply observed again.
    buffered: Mutex<HashMap<String, Vec<observer::Chunk>>>,
}

/// The memory headers of a request.
#[derive(Debug, Clone)]
pub struct ThreadRef {
    pub thread: String,
    pub resource: String,
}

impl ThreadRef {
    /// Reads `x-thread-id` / `x-resource-id`: both turn memory on, neither leaves it off.
    pub fn from_headers(thread: Option<&str>, resource: Option<&str>) -> Result<Option<ThreadRef>, ApiError> {
        let (thread, resource) = match (thread, resource) {
            (None, None) => return Ok(None),
            (Some(t), Some(r)) => (t.trim(), r.trim()),
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    "x-thread-id needs x-resource-id: memory binds each thread to a resource (a user, an \
                     account); send both headers, or neither for a request without memory",
                ))
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "x-resource-id needs x-thread-id: send both headers to use memory, or neither",
                ))
            }
        };
        threads::check_id("x-thread-id", thread).map_err(ApiError::invalid)?;
        threads::check_id("x-resource-id", resource).map_err(ApiError::invalid)?;
        Ok(Some(ThreadRef {
            thread: thread.to_owned(),
            resource: resource.to_owned(),
        }))
    }
}

/// A store failure as the client sees it.
pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(m) => ApiError::not_found(m),
        StoreError::Conflict(m) => ApiError::new_status(409, &m),
        StoreError::Quota(m) => ApiError::new(429, "insufficient_quota", Some("storage_quota_exceeded"), m),
        StoreError::Corrupt(m) => {
            log::error!("memory store: {m}");
            ApiError::new(
                500,
                "server_error",
                Some("corrupt_record"),
                "a stored record this request needs is damaged; nothing of this request was stored (the operator's log names the record)",
            )
        }
        StoreError::Full(m) => {
            log::error!("memory store: {m}");
            ApiError::new(
                507,
                "server_error",
                Some("insufficient_storage"),
                "the gateway's disk is full: nothing of this request was stored; earlier data is safe",
            )
        }
        other => {
            log::error!("memory store: {other}");
            ApiError::new(
                503,
                "server_error",
                Some("store_unavailable"),
                "the memory store failed; nothing of this request was stored, try again",
            )
        }
    }
}

impl Memory {
    pub fn new(config: &Config, store: Store, models: Arc<dyn Models>) -> Memory {
        let m = &config.memory;
        Memory {
            store,
            models,
            settings: Settings {
                observer_model: m.observer_model.clone(),
                reflector_model: m.reflector_model.clone().or_else(|| m.observer_model.clone()),
                message_tokens: m.message_tokens.unwrap_or(MESSAGE_TOKENS).max(1),
                observation_tokens: m.observation_tokens.unwrap_or(OBSERVATION_TOKENS).max(1),
                scope: m.scope.unwrap_or(MemoryScope::Thread),
                max_output_tokens: m.max_output_tokens,
                call_timeout: m.call_timeout_ms.map_or(CALL_TIMEOUT, Duration::from_millis),
                max_wait: m.max_wait_ms.map_or(MAX_WAIT, Duration::from_millis),
                give_way: m.give_way_ms.map_or(GIVE_WAY, Duration::from_millis),
                quiet: m.quiet_ms.map_or(QUIET, Duration::from_millis),
                buffer_share: m.buffer_tokens.unwrap_or(BUFFER_SHARE),
            },
            locks: Mutex::default(),
            backoff: Mutex::default(),
            background: Tasks::default(),
            buffered: Mutex::default(),
        }
    }

    /// The key of the observation record a thread reads and feeds.
    pub fn scope_key(&self, thread: &ThreadRecord) -> String {
        match self.settings.scope {
            MemoryScope::Thread => Scope::Thread {
                tenant: &thread.tenant,
                id: &thread.id,
            }
            .key(),
            MemoryScope::Resource => Scope::Resource {
                tenant: &thread.tenant,
                resource: &thread.resource,
            }
            .key(),
        }
    }

    /// The thresholds in force for a thread: its own, else the config's.
    pub fn thresholds(&self, thread: &ThreadRecord) -> (u64, u64) {
        (
            thread.message_tokens.unwrap_or(self.settings.message_tokens),
            thread.observation_tokens.unwrap_or(self.settings.observation_tokens),
        )
    }

    /// The thresholds for a thread talking to a model of context window `window`: its own or
    /// the config's, capped to [`MESSAGE_SHARE`] and [`OBSERVATION_SHARE`] of the window.
    pub fn thresholds_within(&self, thread: &ThreadRecord, window: Option<u64>) -> (u64, u64) {
        let (messages, observations) = self.thresholds(thread);
        let Some(w) = window else {
            return (messages, observations);
        };
        (
            messages.min(share(w, MESSAGE_SHARE).max(1)),
            observations.min(share(w, OBSERVATION_SHARE).max(1)),
        )
    }

    /// The background runs under way. A run cancelled at shutdown leaves the thread as it was
    /// (each run commits in one transaction), and the next request past the threshold starts
    /// it again.
    pub fn background(&self) -> &Tasks {
        &self.background
    }

    fn lock(&self, key: &str) -> Arc<smol::lock::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits for, so the map stays as small as the work.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_owned()).or_default().clone()
    }

    /// Whether a run on `key` is under way right now.
    fn busy(&self, key: &str) -> bool {
        let locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.get(key).is_some_and(|l| l.try_lock().is_none())
    }

    /// How many buffered observations wait for the thread's threshold, covering how many messages.
    pub fn buffered(&self, thread: &ThreadRecord) -> (usize, u64) {
        observer::buffered(self, thread)
    }

    /// Drops a thread's buffered observations: its messages were deleted (what is left is
    /// observed again) or the thread itself was.
    pub fn drop_buffered(&self, tenant: &str, thread: &str) {
        let mut all = self.buffered.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&observe_key(tenant, thread));
    }

    /// Whether an observer run for the thread, and a reflector run for its scope, are under way.
    pub fn activity(&self, thread: &ThreadRecord) -> (bool, bool) {
        (
            self.busy(&observe_key(&thread.tenant, &thread.id)),
            self.busy(&reflect_key(&self.scope_key(thread))),
        )
    }

    fn backing_off(&self, key: &str) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.get(key).is_some_and(|(_, until)| Instant::now() < *until)
    }

    /// Records a run's outcome for its retry schedule.
    fn ran(&self, key: &str, ok: bool) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            backoff.remove(key);
            return;
        }
        let failures = backoff.get(key).map_or(0, |(n, _)| *n) + 1;
        let wait = RETRY_FIRST.saturating_mul(1 << failures.min(10)).min(RETRY_CAP);
        backoff.insert(key.to_owned(), (failures, Instant::now() + wait));
    }
}

fn observe_key(tenant: &str, thread: &str) -> String {
    format!("observe\0{tenant}\0{thread}")
}

/// After an observer run gave way to a client's request (a server with slots, busy with the
/// user): requests on the thread stop waiting for observation for a while (doubling as under
/// backoff), since the run they would wait for is the one their own request makes give way.
fn block_key(tenant: &str, thread: &str) -> String {
    format!("block\0{tenant}\0{thread}")
}

fn reflect_key(scope: &str) -> String {
    format!("reflect\0{scope}")
}

/// A message ready to append, with its token estimate.
///
/// A model's reasoning text (`reasoning_content`) is not kept: it is not part of the
/// conversation, and some servers refuse it in a history. Anthropic's `thinking_blocks` are
/// kept: a tool-using turn must carry its thinking back to Anthropic (other adapters drop them).
pub fn to_store(mut message: Message, incomplete: bool) -> NewMessage {
    message.rest.remove("reasoning_content");
    NewMessage {
        tokens: tokens::message(&message),
        message,
        incomplete,
        created_at: None,
    }
}

/// Tokens of the messages not yet observed.
pub fn pending_tokens(unobserved: &[StoredMessage]) -> u64 {
    unobserved.iter().map(|m| m.tokens).sum()
}

/// Who runs the observer and reflector calls for a turn: the model of the request that
/// triggered them and the tenant they serve. Never the caller's BYOK key: memory's calls go to
/// the observer/reflector model's provider with its configured key (README, Keys and BYOK).
#[derive(Clone)]
struct RunAs {
    model: String,
    /// The tenant of the thread the run serves, whose key its usage is counted against and
    /// whose token limit (`tpm`) it is charged to.
    tenant: String,
    limits: Limits,
    /// The context window of the request's model, which scales the thresholds.
    window: Option<u64>,
}

/// The caller a request's memory serves: its tenant, whose threads it reads and whose usage
/// and token limit (`tpm`) the memory calls it starts count against, and that tenant's limits.
#[derive(Debug, Clone)]
pub struct Payer {
    pub tenant: String,
    pub limits: Limits,
}

/// One request's memory: what it brought that is new, to be stored with the answer.
pub struct Turn {
    memory: Arc<Memory>,
    thread: ThreadRecord,
    new: Vec<Message>,
    by: RunAs,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn")
            .field("thread", &self.thread.id)
            .finish_non_exhaustive()
    }
}

/// What one read of a thread gives context assembly.
struct View {
    unobserved: Vec<StoredMessage>,
    recent: Vec<StoredMessage>,
    record: observations::ObservationRecord,
    /// Resource scope: the other threads' newest unobserved messages.
    others: String,
}

impl View {
    /// The memory message, its observations within `room` (the newest kept when reflection
    /// fell behind the window).
    fn memory(&self, room: Room, thread: &str) -> Option<Message> {
        let record = &self.record;
        let mut observations = std::borrow::Cow::from(record.text.as_str());
        if record.tokens > room.observations() {
            log::info!(
                target: "memgate::memory",
                "thread {thread:?}: its {} observation tokens are past the model's window share of {}; the newest are \
                 shown until reflection condenses them",
                record.tokens,
                room.observations()
            );
            observations = lines::newest(&record.text, room.observations()).into();
        }
        context::memory_message(&observations, record.current_task.as_deref(), &self.others)
    }
}

/// Reads what a request on `thread` shows: its unobserved messages, the `recent` newest, its
/// observations and (resource scope) the other threads'.
fn view(memory: &Memory, thread: &ThreadRecord, recent: usize) -> Result<View, StoreError> {
    let reader = memory.store.read()?;
    let unobserved = reader.messages_from(thread, thread.cursor)?;
    let recent = if recent <= unobserved.len() {
        unobserved[unobserved.len() - recent..].to_vec()
    } else {
        reader.last_messages(thread, recent)?
    };
    let record = reader.observations(&memory.scope_key(thread))?.unwrap_or_default();
    let others = match memory.settings.scope {
        MemoryScope::Resource => other_threads(&reader, thread)?,
        MemoryScope::Thread => String::new(),
    };
    Ok(View {
        unobserved,
        recent,
        record,
        others,
    })
}

/// Resource scope: the newest unobserved messages of the resource's other threads (the
/// [`OTHER_THREADS`] most recently active, [`OTHER_MESSAGES`] each, [`OTHER_TOKENS`] in all,
/// newest kept), as dated transcripts labelled by thread, for the memory message. They reach
/// the shared observations only once their own thread is observed.
fn other_threads(reader: &crate::store::Reader, thread: &ThreadRecord) -> Result<String, StoreError> {
    let mut others: Vec<ThreadRecord> = reader
        .threads(Some(&thread.tenant), Some(&thread.resource))?
        .into_iter()
        .filter(|t| t.id != thread.id && t.next_seq > t.cursor)
        .collect();
    others.sort_by_key(|t| std::cmp::Reverse(t.updated_at));
    let mut blocks = Vec::new();
    let mut spent = 0;
    for t in others.iter().take(OTHER_THREADS) {
        let mut recent: Vec<StoredMessage> = reader.last_messages(t, OTHER_MESSAGES)?;
        recent.retain(|m| m.seq >= t.cursor);
        // Newest first within the token bound: drop the oldest lines of a thread that overflows.
        while !recent.is_empty() && spent + pending_tokens(&recent) > OTHER_TOKENS {
            recent.remove(0);
        }
        if recent.is_empty() {
            break;
        }
        spent += pending_tokens(&recent);
        let label = t.id.replace(['"', '<', '>'], "_");
        blocks.push(format!(
            "<thread id=\"{label}\">\n{}</thread>",
            observer::transcript(&recent)
        ));
    }
    Ok(blocks.join("\n"))
}

/// The thread read again after a memory run (unchanged if it is gone).
fn refresh(memory: &Memory, thread: &ThreadRecord, recent: usize, seen: View) -> Result<View, ApiError> {
    match memory
        .store
        .read()
        .and_then(|r| r.thread(&thread.tenant, &thread.id))
        .map_err(store_error)?
    {
        Some(t) => view(memory, &t, recent).map_err(store_error),
        None => Ok(seen),
    }
}

impl Memory {
    /// Opens a turn: binds the thread (creating it on first use), works out which of the
    /// client's messages are new, and returns the messages to send upstream.
    pub async fn begin(
        self: &Arc<Memory>,
        payer: &Payer,
        at: &ThreadRef,
        messages: Vec<Message>,
        model: &str,
        rest: &crate::ir::Rest,
    ) -> Result<(Vec<Message>, Turn), ApiError> {
        let found = self
            .store
            .read()
            .and_then(|r| r.thread(&payer.tenant, &at.thread))
            .map_err(store_error)?;
        let thread = match found {
            Some(t) if t.resource == at.resource => t,
            Some(_) => {
                return Err(store_error(StoreError::NotFound(format!(
                    "thread {:?} not found",
                    at.thread
                ))))
            }
            None => {
                let (id, tenant, resource) = (at.thread.clone(), payer.tenant.clone(), at.resource.clone());
                self.store
                    .write(move |tx| threads::bind(tx, &id, &tenant, &resource, clock::now_ms()))
                    .await
                    .map_err(store_error)?
            }
        };
        let (system, conversation): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(context::is_system);
        let recent = conversation.len().saturating_sub(1);
        let mut seen = view(self, &thread, recent).map_err(store_error)?;
        let new = conversation[context::already_stored(&conversation, &seen.recent)..].to_vec();
        // Checked before the model is called: a refused turn costs no tokens.
        self.store
            .read()
            .and_then(|r| quota::admit(&r, &payer.tenant, quota::message_bytes(&new), self.store.quota()))
            .map_err(store_error)?;
        let window = self.models.window(model).await;
        let by = RunAs {
            model: model.to_owned(),
            tenant: payer.tenant.clone(),
            limits: payer.limits,
            window,
        };
        let (limit, _) = self.thresholds_within(&thread, window);
        let new_tokens = new.iter().map(tokens::message).sum::<u64>();
        let pending = |seen: &View| pending_tokens(&seen.unobserved) + new_tokens;
        // A failing observer is not waited for again until its backoff ends.
        let behind = |seen: &View| {
            pending(seen) as f64 > limit as f64 * BLOCK_AFTER
                && !self.backing_off(&observe_key(&thread.tenant, &thread.id))
                && !self.backing_off(&block_key(&thread.tenant, &thread.id))
        };
        if behind(&seen) {
            // Observations buffered ahead need no model call: activated first, they may be enough.
            observer::activate_ready(self, &thread.id, &by, new_tokens).await;
            seen = refresh(self, &thread, recent, seen)?;
        }
        if behind(&seen) {
            log::info!(target: "memgate::memory", "thread {:?}: {} unobserved tokens is past blockAfter; observing before forwarding", thread.id, pending(&seen));
            if !observe_within(self, &thread.id, &by).await {
                log::warn!(target: "memgate::memory", "thread {:?}: observation took over {} ms; forwarding without waiting for it", thread.id, self.settings.max_wait.as_millis());
            }
            seen = refresh(self, &thread, recent, seen)?;
        }
        let budget = window.map(|w| context_budget(rest, w));
        let memory = seen.memory(Room(window), &thread.id);
        let built = context::assemble(system, memory, &seen.unobserved, &new, budget);
        if built.left_out > 0 {
            log::info!(
                target: "memgate::memory",
                "thread {:?}: left the {} oldest unobserved messages ({} tokens) out of the context to fit {model}'s \
                 window of {} tokens; they stay stored and are observed later",
                thread.id,
                built.left_out,
                built.left_out_tokens,
                window.unwrap_or_default()
            );
        }
        if let Some(budget) = budget.filter(|b| built.tokens > *b) {
            log::warn!(
                target: "memgate::memory",
                "thread {:?}: the context (about {} tokens) is over its budget of {budget} even with only the newest turn \
                 ({} of {model}'s window of {} tokens kept for the answer): sent as it is, the upstream may refuse it",
                thread.id,
                built.tokens,
                window.map_or(0, |w| answer_reserve(rest, w)),
                window.unwrap_or_default()
            );
        }
        let upstream = built.messages;
        let turn = Turn {
            memory: self.clone(),
            thread,
            new,
            by,
        };
        Ok((upstream, turn))
    }
}

impl Turn {
    /// Stores the turn's new messages and the answer (`complete` false for one cut short) in one
    /// commit, then starts an observer run if the thread is past its threshold.
    pub async fn finish(self, answer: Option<Message>, complete: bool) -> Result<(), ApiError> {
        let mut messages: Vec<NewMessage> = self.new.into_iter().map(|m| to_store(m, false)).collect();
        messages.extend(answer.map(|m| to_store(m, !complete)));
        let (id, tenant, born) = (
            self.thread.id.clone(),
            self.thread.tenant.clone(),
            self.thread.created_at,
        );
        let bytes = quota::message_bytes(messages.iter().map(|m| &m.message));
        let written = self
            .memory
            .store
            .write(move |tx| {
                // Deleted meanwhile (perhaps created again): the exchange is not stored, and
                // nothing is recreated.
                let mut thread = threads::get(tx, &tenant, &id)?
                    .filter(|t| t.created_at == born)
                    .ok_or_else(|| StoreError::NotFound(format!("thread {id:?} was deleted during the request")))?;
                // The quota was checked when the turn began; the answer is stored whole.
                quota::charge(tx, &tenant, &id, bytes, None)?;
                threads::append(tx, &mut thread, messages, clock::now_ms())?;
                Ok(thread)
            })
            .await;
        let thread = match written {
            Ok(t) => t,
            Err(StoreError::NotFound(m)) => {
                log::warn!(target: "memgate::memory", "{m}; the exchange was not stored");
                return Ok(());
            }
            Err(e) => return Err(store_error(e)),
        };
        maybe_observe(&self.memory, &thread, &self.by);
        Ok(())
    }
}

/// After messages were stored through the Memory API: starts an observer run as a chat turn
/// would, if the thread is past its threshold. There is no request model to fall back on, so
/// without `[memory] observer_model` the run waits for the thread's next chat request.
pub fn saved(memory: &Arc<Memory>, thread: &ThreadRecord, payer: &Payer) {
    let Some(model) = memory.settings.observer_model.clone() else {
        log::debug!(target: "memgate::memory", "thread {:?}: no observer_model; observed at its next chat request", thread.id);
        return;
    };
    let by = RunAs {
        model,
        tenant: payer.tenant.clone(),
        limits: payer.limits,
        window: None,
    };
    maybe_observe(memory, thread, &by);
}

/// Runs the observer for a request past blockAfter, in the background, and waits for it at
/// most `max_wait`: false when it gave up waiting (the run goes on, and the request is sent
/// without it).
async fn observe_within(memory: &Arc<Memory>, thread_id: &str, by: &RunAs) -> bool {
    let key = observe_key(&by.tenant, thread_id);
    type Done = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
    // A run under way is joined, not queued behind: requests past blockAfter while a slow call
    // holds the thread would otherwise each add a run.
    let done: Done = if memory.busy(&key) {
        let lock = memory.lock(&key);
        Box::pin(async move {
            drop(lock.lock().await);
            true
        })
    } else {
        let (done, finished) = async_channel::bounded::<()>(1);
        let (m, id, b) = (memory.clone(), thread_id.to_owned(), by.clone());
        let started = memory.background().spawn(async move {
            observer::run(&m, &id, &b, true).await;
            let _ = done.send(()).await;
        });
        if !started {
            return false;
        }
        Box::pin(async move { finished.recv().await.is_ok() })
    };
    futures_lite::future::or(done, async {
        smol::Timer::after(memory.settings.max_wait).await;
        false
    })
    .await
}

/// Starts a background observer run when the thread has work for one (past its threshold,
/// or a buffered step ahead of it) and none is under way or backing off.
fn maybe_observe(memory: &Arc<Memory>, thread: &ThreadRecord, by: &RunAs) {
    let key = observe_key(&thread.tenant, &thread.id);
    if memory.busy(&key) || memory.backing_off(&key) {
        return;
    }
    let unobserved = memory
        .store
        .read()
        .and_then(|r| r.messages_from(thread, thread.cursor))
        .unwrap_or_default();
    if observer::next_step(memory, thread, &unobserved, 0, by.window) == observer::Step::Idle {
        return;
    }
    let (m, id, by) = (memory.clone(), thread.id.clone(), by.clone());
    if !memory
        .background()
        .spawn(async move { observer::run(&m, &id, &by, false).await })
    {
        log::debug!(target: "memgate::memory", "shutting down: thread {:?} is observed after the restart", thread.id);
    }
}

/// A memory call's room in its model's context window (`None`: unknown, nothing bounded):
/// the instructions and input, the answer's `max_tokens` and the margin fit it together.
#[derive(Clone, Copy, Debug)]
struct Room(Option<u64>);

impl Room {
    async fn of(memory: &Memory, model: &str) -> Room {
        Room(memory.models.window(model).await)
    }

    /// How much of a scope's observations fits in front of the model: [`OBSERVATION_SHARE`]
    /// of the window, the reflection threshold's cap. Observations grow past it only while
    /// reflection fails; then the newest are shown.
    fn observations(self) -> u64 {
        self.0.map_or(u64::MAX, |w| share(w, OBSERVATION_SHARE))
    }

    /// The `max_tokens` of a call whose unbounded choice is `bound`: within
    /// [`ANSWER_SHARE`] of the window.
    fn answer(self, bound: u64) -> u64 {
        self.0.map_or(bound, |w| bound.min(share(w, ANSWER_SHARE)))
    }

    /// Tokens left for the input next to `fixed` ones (instructions, framing), the answer's
    /// room and the margin; a tenth of the window at least, so a call always carries something.
    fn input(self, fixed: u64) -> Option<u64> {
        self.0.map(|w| {
            w.saturating_sub(fixed + share(w, ANSWER_SHARE) + w / MARGIN_DIVISOR)
                .max(w / 10)
        })
    }
}

fn share(window: u64, share: f64) -> u64 {
    (window as f64 * share) as u64
}

/// Tokens the context may take in a window of `window`: what the answer's room
/// ([`answer_reserve`]) and the margin leave.
fn context_budget(rest: &crate::ir::Rest, window: u64) -> u64 {
    window.saturating_sub(answer_reserve(rest, window) + window / MARGIN_DIVISOR)
}

/// Tokens kept free for the answer in a window of `window`: the request's own limit
/// (`max_tokens`, `max_completion_tokens`, Responses' `max_output_tokens`), else
/// [`ANSWER_SHARE`] of the window. All of it is kept, however large (a server such as vLLM
/// refuses a prompt whose tokens and `max_tokens` together pass its window): a large limit
/// leaves less of the conversation, down to the newest turn alone.
fn answer_reserve(rest: &crate::ir::Rest, window: u64) -> u64 {
    let asked = ["max_completion_tokens", "max_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| rest.get(*k).and_then(Value::as_u64));
    asked.unwrap_or(share(window, ANSWER_SHARE)).min(window)
}

impl Memory {
    /// Calls a model as memory's own client: a plain chat request of at most `max_tokens`
    /// output tokens, given up after `call_timeout`; the answer's text and usage back. Errors
    /// are for the log.
    async fn call(
        &self,
        model: &str,
        messages: Vec<Message>,
        by: &RunAs,
        max_tokens: u64,
    ) -> Result<(String, Usage), CallError> {
        let limit = self.settings.call_timeout;
        // Not timed: a server with slots is waited for until clients leave it alone.
        self.models.until_free(model, self.settings.quiet).await;
        let call = self.models.call(Call {
            model,
            messages,
            max_tokens,
            give_way: self.settings.give_way,
            tenant: &by.tenant,
            limits: by.limits,
        });
        futures_lite::future::or(call, async {
            smol::Timer::after(limit).await;
            Err(CallError::Failed(format!(
                "{model} did not answer within {} ms",
                limit.as_millis()
            )))
        })
        .await
    }
}

/// An observer or reflector prompt: instructions as the system message, the work as the user's.
fn instructed(instructions: &str, user: String) -> Vec<Message> {
    [("system", instructions.to_owned()), ("user", user)]
        .into_iter()
        .map(|(role, text)| Message {
            role: role.to_owned(),
            content: Value::String(text),
            tool_calls: None,
            tool_call_id: None,
            rest: Default::default(),
        })
        .collect()
}

/// Deletes the tenant's thread `id` with its messages and (thread scope) its observations.
pub fn delete_thread_op(tx: &redb::WriteTransaction, tenant: &str, id: &str) -> Result<ThreadRecord, StoreError> {
    let thread = threads::owned(tx, tenant, id)?;
    threads::delete(tx, &thread)?;
    quota::release(tx, tenant, id)?;
    observations::delete(tx, &Scope::Thread { tenant, id }.key())?;
    Ok(thread)
}

/// Deletes the tenant's thread `id` (see [`delete_thread_op`]) and its buffered observations.
pub async fn delete_thread(memory: &Memory, tenant: &str, id: &str) -> Result<ThreadRecord, StoreError> {
    let (t, i) = (tenant.to_owned(), id.to_owned());
    let thread = memory.store.write(move |tx| delete_thread_op(tx, &t, &i)).await?;
    memory.drop_buffered(&thread.tenant, &thread.id);
    Ok(thread)
}

/// Erases a tenant's resource (see [`forget_resource`]) and its threads' buffered observations.
pub async fn erase_resource(memory: &Memory, tenant: &str, resource: &str) -> Result<Vec<ThreadRecord>, StoreError> {
    let erase = forget_resource(Some(tenant.to_owned()), resource.to_owned());
    let gone = memory.store.write(erase).await?;
    for t in &gone {
        memory.drop_buffered(&t.tenant, &t.id);
    }
    Ok(gone)
}

/// Deletes messages of the tenant's thread `id`; returns how many existed. The thread's
/// buffered observations may hold them, so they go too (what is left is observed again).
pub async fn delete_messages(memory: &Memory, tenant: &str, id: &str, ids: Vec<String>) -> Result<u64, StoreError> {
    let (t, i) = (tenant.to_owned(), id.to_owned());
    let deleted = memory
        .store
        .write(move |tx| threads::delete_messages(tx, &mut threads::owned(tx, &t, &i)?, &ids))
        .await?;
    if deleted > 0 {
        memory.drop_buffered(tenant, id);
    }
    Ok(deleted)
}

/// Erases everything of a resource: its threads, their messages and observations, and the
/// resource's shared observations. Returns the write to run (on the writer, from async code or
/// not), which reports the threads deleted. `tenant` `None` is the admin CLI: every tenant.
///
/// The threads are found inside the write, so one created while the erase waited its turn goes
/// too; and writers that find their thread gone drop what they meant to store ([`Turn::finish`],
/// the observer, [`count_failure`]), so nothing of the resource comes back after it.
pub fn forget_resource(
    tenant: Option<String>,
    resource: String,
) -> impl FnOnce(&redb::WriteTransaction) -> Result<Vec<ThreadRecord>, StoreError> + Send + 'static {
    move |tx: &redb::WriteTransaction| {
        let doomed = threads::of_resource(tx, tenant.as_deref(), &resource)?;
        // Shared records can outlive the threads that fed them, so they are found on their own.
        let shared = observations::resource_scopes(tx, tenant.as_deref(), &resource)?;
        for t in &doomed {
            delete_thread_op(tx, &t.tenant, &t.id)?;
        }
        for key in &shared {
            observations::delete(tx, key)?;
        }
        Ok(doomed)
    }
}

/// What an observer or reflector run spent and how many of its answers were refused; when
/// it fails, also why.
#[derive(Debug)]
struct Failed {
    why: String,
    refused: u64,
    usage: Usage,
    /// The run's call gave way to a client's request: tried again later, not a failure.
    gave_way: bool,
}

impl Failed {
    /// One memory call of the run, its usage added up; an error ends the run with what it spent.
    async fn call(
        &mut self,
        memory: &Memory,
        model: &str,
        messages: Vec<Message>,
        by: &RunAs,
        max_tokens: u64,
    ) -> Result<String, Failed> {
        match memory.call(model, messages, by, max_tokens).await {
            Ok((answer, usage)) => {
                self.usage.prompt_tokens += usage.prompt_tokens;
                self.usage.completion_tokens += usage.completion_tokens;
                Ok(answer)
            }
            Err(e) => Err(Failed {
                gave_way: matches!(e, CallError::GaveWay),
                why: match e {
                    CallError::Failed(why) => why,
                    CallError::GaveWay => format!("{model} was needed by a client's request"),
                },
                refused: self.refused,
                usage: std::mem::take(&mut self.usage),
            }),
        }
    }
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed {
            why,
            refused: 0,
            usage: Usage::default(),
            gave_way: false,
        }
    }
}

/// After a run under `key` that failed: backoff, metrics, the log and the record. A run whose
/// call gave way to a client's request is no failure: no backoff (the next request past the
/// threshold starts it again), only what it spent is counted.
async fn run_failed(memory: &Memory, job: Job, key: &str, thread: &ThreadRecord, scope: String, failed: &Failed) {
    let what = match job {
        Job::Observer => "observer",
        Job::Reflector => "reflector",
    };
    if failed.gave_way {
        log::info!(target: "memgate::memory", "{what} for thread {:?} gave way: {}; it runs again later", thread.id, failed.why);
        if job == Job::Observer {
            memory.ran(&block_key(&thread.tenant, &thread.id), false);
        }
    } else {
        memory.ran(key, false);
        memory.models.ran(job, false);
        log::warn!(target: "memgate::memory", "{what} for thread {:?} failed (will retry later): {}", thread.id, failed.why);
    }
    count_failure(memory, thread, scope, failed).await;
}

/// Counts a run that did not commit (its refused answers, the tokens it spent and, unless it
/// gave way, one failure) in the record of `scope`, if `thread` (the one the run served) still
/// exists: after an erase or delete the count is dropped, never left behind as a stub record of
/// an erased scope.
async fn count_failure(memory: &Memory, thread: &ThreadRecord, scope: String, failed: &Failed) {
    let (refused, prompt, completion) = (
        failed.refused,
        failed.usage.prompt_tokens,
        failed.usage.completion_tokens,
    );
    let (tenant, id, born) = (thread.tenant.clone(), thread.id.clone(), thread.created_at);
    let gave_way = failed.gave_way;
    let counted = memory
        .store
        .write(move |tx| {
            if threads::get(tx, &tenant, &id)?.is_none_or(|t| t.created_at != born) {
                return Ok(());
            }
            let mut record = observations::get(tx, &scope)?;
            record.failures += u64::from(!gave_way);
            record.refused += refused;
            record.memory_prompt_tokens += prompt;
            record.memory_completion_tokens += completion;
            observations::put(tx, &scope, &record)
        })
        .await;
    if let Err(e) = counted {
        log::warn!(target: "memgate::memory", "could not count a failed run of thread {:?}: {e}", thread.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn the_context_and_the_answer_asked_for_fit_the_window_together() {
        let rest =
            |max: u64| -> crate::ir::Rest { serde_json::from_value(serde_json::json!({"max_tokens": max})).unwrap() };
        for (window, max) in [
            (4096, 3000),
            (4096, 100),
            (4096, 2048),
            (8192, 8000),
            (4096, 4096),
            (4096, 9000),
        ] {
            let budget = context_budget(&rest(max), window);
            let room = window.saturating_sub(max + window / MARGIN_DIVISOR);
            // No room left: only the newest turn is sent (and the log says so).
            assert_eq!(budget, room, "window {window}, max_tokens {max}");
            assert!(budget + max.min(window) <= window, "window {window}, max_tokens {max}");
        }
        assert_eq!(context_budget(&rest(3000), 4096), 4096 - 3000 - 204);
        // Unset: a fifth of the window for the answer.
        assert_eq!(context_budget(&crate::ir::Rest::new(), 4096), 4096 - 819 - 204);
    }

    #[test]
    fn an_erase_takes_threads_created_after_it_was_prepared() {
        let dir = std::env::temp_dir().join(format!("memgate-erase-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        let bind = |id: &'static str| {
            store
                .write_blocking(move |tx| threads::bind(tx, id, "t_a", "alex", 1))
                .unwrap()
        };
        bind("before");
        let erase = forget_resource(Some("t_a".to_owned()), "alex".to_owned());
        // A request binds a new thread between the erase's preparation and its commit.
        bind("meanwhile");
        let gone = store.write_blocking(erase).unwrap();
        let mut ids: Vec<String> = gone.into_iter().map(|t| t.id).collect();
        ids.sort();
        assert_eq!(ids, ["before", "meanwhile"]);
        assert!(store.read().unwrap().threads(Some("t_a"), None).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
