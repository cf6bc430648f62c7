//! Scripted models for memory's tests: answers given in advance, calls and runs recorded, so
//! the observer and reflector run on a real database without an upstream.

use super::{Boxed, Call, CallError, Job, Memory, Models, RunAs};
use crate::ir::Usage;
use crate::store::{threads, Store};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What every scripted answer reports spending.
pub(super) const SPENT: (u64, u64) = (100, 10);

#[derive(Debug, Default)]
pub(super) struct Scripted {
    answers: Mutex<VecDeque<Result<String, CallError>>>,
    /// Each call's model and tenant.
    pub calls: Mutex<Vec<(String, String)>>,
    pub runs: Mutex<Vec<(Job, bool)>>,
}

impl Scripted {
    pub fn new(answers: impl IntoIterator<Item = Result<String, CallError>>) -> Arc<Scripted> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into_iter().collect()),
            ..Default::default()
        })
    }
}

impl Models for Scripted {
    fn window<'a>(&'a self, _model: &'a str) -> Boxed<'a, Option<u64>> {
        Box::pin(async { None })
    }

    fn until_free<'a>(&'a self, _model: &'a str, _quiet: Duration) -> Boxed<'a, ()> {
        Box::pin(async {})
    }

    fn call<'a>(&'a self, call: Call<'a>) -> Boxed<'a, Result<(String, Usage), CallError>> {
        let mut calls = self.calls.lock().unwrap();
        calls.push((call.model.to_owned(), call.tenant.to_owned()));
        let next = self.answers.lock().unwrap().pop_front();
        let answer = next.unwrap_or_else(|| Err(CallError::Failed("no answer scripted".to_owned())));
        let usage = Usage {
            prompt_tokens: SPENT.0,
            completion_tokens: SPENT.1,
            total_tokens: SPENT.0 + SPENT.1,
            rest: Default::default(),
        };
        Box::pin(async move { answer.map(|text| (text, usage)) })
    }

    fn ran(&self, job: Job, ok: bool) {
        self.runs.lock().unwrap().push((job, ok));
    }
}

/// Memory on a fresh database in a temp dir, configured by `config` (`[memory]` settings),
/// calling `models`.
pub(super) fn memory(name: &str, config: &str, models: Arc<dyn Models>) -> (Arc<Memory>, PathBuf) {
    let dir = std::env::temp_dir().join(format!("memgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir).unwrap();
    let config = crate::config::Config::parse(config).unwrap();
    (Arc::new(Memory::new(&config, store, models)), dir)
}

/// Runs as tenant t_a's requests to `local/small` do.
pub(super) fn by() -> RunAs {
    RunAs {
        model: "local/small".to_owned(),
        tenant: "t_a".to_owned(),
        limits: Default::default(),
        window: None,
    }
}

mod tests {
    use super::super::{block_key, observe_key, observer, reflect_key, reflector, to_store, Memory};
    use super::*;
    use crate::store::{observations, ObservationRecord, Scope, ThreadRecord};
    use serde_json::json;

    const ANSWER: &str = "<observations>\nDate: Nov 22, 2026\n* 🔴 (14:30) User stated their name is Alex\n* 🟡 (14:31) User is planning a garden in Lyon\n</observations>\n<current-task>\nPrimary: planning the garden\n</current-task>";

    /// Thread `a` of tenant t_a (resource alex) with six messages, well past a threshold of 20.
    fn said(memory: &Memory) -> ThreadRecord {
        memory
            .store
            .write_blocking(|tx| {
                let mut t = threads::bind(tx, "a", "t_a", "alex", 1)?;
                let said = [
                    ("user", "My name is Alex and I live in Lyon"),
                    ("assistant", "Nice to meet you, Alex"),
                    ("user", "I am planning a vegetable garden this spring"),
                    ("assistant", "Tomatoes do well in Lyon's summers"),
                    ("user", "I will plant tomatoes and beans then"),
                    ("assistant", "Good choice"),
                ]
                .map(|(role, text)| {
                    to_store(
                        serde_json::from_value(json!({"role": role, "content": text})).unwrap(),
                        false,
                    )
                });
                threads::append(tx, &mut t, said.into(), 1)?;
                Ok(t)
            })
            .unwrap()
    }

    /// The observation record of `thread`'s scope (empty when none was written).
    fn record_of(memory: &Memory, thread: &ThreadRecord) -> ObservationRecord {
        let reader = memory.store.read().unwrap();
        reader
            .observations(&memory.scope_key(thread))
            .unwrap()
            .unwrap_or_default()
    }

    /// One observer run on [`said`]'s thread, the model answering `answers`.
    fn observe(
        name: &str,
        answers: Vec<Result<String, CallError>>,
    ) -> (Arc<Scripted>, Arc<Memory>, ThreadRecord, PathBuf) {
        let models = Scripted::new(answers);
        let (memory, dir) = memory(
            name,
            "[memory]\nmessage_tokens = 20\nbuffer_tokens = 0\n",
            models.clone(),
        );
        said(&memory);
        smol::block_on(observer::run(&memory, "a", &by(), true));
        let thread = memory.store.read().unwrap().thread("t_a", "a").unwrap().unwrap();
        (models, memory, thread, dir)
    }

    #[test]
    fn an_observer_run_stores_the_observations_and_moves_the_cursor() {
        let (models, memory, thread, dir) = observe("scripted-observe", vec![Ok(ANSWER.to_owned())]);
        let record = record_of(&memory, &thread);
        assert!(
            record.text.contains("* 🔴 (14:30) User stated their name is Alex"),
            "{}",
            record.text
        );
        assert_eq!(record.current_task.as_deref(), Some("Primary: planning the garden"));
        assert_eq!((record.observer_runs, record.failures, record.refused), (1, 0, 0));
        assert_eq!((record.memory_prompt_tokens, record.memory_completion_tokens), SPENT);
        // All but the raw tail (20% of the threshold) was observed.
        assert!(thread.cursor > 0 && thread.cursor <= 6, "cursor {}", thread.cursor);
        assert_eq!(
            *models.calls.lock().unwrap(),
            [("local/small".to_owned(), "t_a".to_owned())]
        );
        assert_eq!(*models.runs.lock().unwrap(), [(Job::Observer, true)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_answer_is_asked_again_once() {
        let (models, memory, thread, dir) = observe(
            "scripted-refused",
            vec![Ok("I'd be happy to help!".to_owned()), Ok(ANSWER.to_owned())],
        );
        let record = record_of(&memory, &thread);
        assert_eq!((record.observer_runs, record.refused), (1, 1));
        assert_eq!(models.calls.lock().unwrap().len(), 2);
        assert!(thread.cursor > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_call_that_gave_way_is_no_failure() {
        let (models, memory, thread, dir) = observe("scripted-gave-way", vec![Err(CallError::GaveWay)]);
        let record = record_of(&memory, &thread);
        assert_eq!((thread.cursor, record.failures, record.text.as_str()), (0, 0, ""));
        // Not backing off: the next request past the threshold starts it again; but requests
        // stop waiting for it a while, since theirs is what it gives way to.
        assert!(!memory.backing_off(&observe_key("t_a", "a")));
        assert!(memory.backing_off(&block_key("t_a", "a")));
        assert!(models.runs.lock().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_call_is_counted_and_backed_off() {
        let (models, memory, thread, dir) = observe(
            "scripted-failed",
            vec![Err(CallError::Failed("upstream down".to_owned()))],
        );
        let record = record_of(&memory, &thread);
        assert_eq!((thread.cursor, record.failures), (0, 1));
        assert!(memory.backing_off(&observe_key("t_a", "a")));
        assert_eq!(*models.runs.lock().unwrap(), [(Job::Observer, false)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reflection_replaces_the_observations_and_keeps_the_old_generation() {
        let reflection = "<observations>\nDate: Nov 22, 2026\n* 🔴 (14:30) User is Alex, lives in Lyon, plans a garden of tomatoes and beans\n</observations>";
        let models = Scripted::new([Ok(reflection.to_owned())]);
        let (memory, dir) = memory(
            "scripted-reflect",
            "[memory]\nobservation_tokens = 40\n",
            models.clone(),
        );
        let thread = said(&memory);
        let old = [
            "Date: Nov 22, 2026",
            "* 🔴 (14:30) User stated their name is Alex",
            "* 🔴 (14:30) User lives in Lyon, in the old town near the river",
            "* 🟡 (14:31) User is planning a vegetable garden this spring",
            "* 🟡 (14:32) User will plant tomatoes and beans in the garden",
            "* 🟢 (14:33) Assistant said tomatoes do well in Lyon's summers",
        ]
        .join("\n");
        let scope = Scope::Thread { tenant: "t_a", id: "a" }.key();
        let record = ObservationRecord {
            tokens: crate::memory::tokens::text(&old),
            text: old.clone(),
            ..Default::default()
        };
        assert!(record.tokens > 40, "{} tokens", record.tokens);
        let key = scope.clone();
        memory
            .store
            .write_blocking(move |tx| observations::put(tx, &key, &record))
            .unwrap();
        smol::block_on(reflector::run(&memory, &thread.id, &by()));
        let reader = memory.store.read().unwrap();
        let record = reader.observations(&scope).unwrap().unwrap();
        assert_eq!(
            record.text,
            "Date: Nov 22, 2026\n* 🔴 (14:30) User is Alex, lives in Lyon, plans a garden of tomatoes and beans"
        );
        assert_eq!((record.generation, record.reflector_runs), (1, 1));
        assert_eq!(reader.history(&scope).unwrap()[0].text, old);
        assert!(!memory.backing_off(&reflect_key(&scope)));
        assert_eq!(*models.runs.lock().unwrap(), [(Job::Reflector, true)]);
        drop(reader);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
