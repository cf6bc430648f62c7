//! An upstream that runs a fixed number of requests at once (`[providers.NAME] slots`: one for
//! llama-cpp-python, `--parallel` for llama.cpp's server). Past them a request queues inside
//! the server behind whatever memgate sent before, a client's behind a memory call too, for as
//! long as that call generates. memgate counts what it has in flight there: a client's request
//! that finds every slot taken while memory holds one asks the newest memory call to give way,
//! which hangs up once its grace has passed (memory streams its calls there, and a server stops
//! a streamed generation whose client is gone).

use smol::channel::{Receiver, Sender};
use smol::Timer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The slots of one upstream.
#[derive(Debug)]
pub struct Slots {
    count: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    clients: usize,
    /// When a client's request last started or ended.
    last_client: Option<Instant>,
    /// Memory calls in flight, oldest first.
    memory: Vec<Call>,
    next_id: u64,
}

#[derive(Debug)]
struct Call {
    id: u64,
    grace: Duration,
    /// Dropped to ask the call to give way (its receiver then wakes).
    ask: Option<Sender<()>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

/// One request's hold on a slot, released when dropped (with the response body).
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Client,
    Memory {
        id: u64,
        asked: Receiver<()>,
        deadline: Arc<Mutex<Option<Instant>>>,
    },
}

impl Slots {
    pub fn new(count: usize) -> Arc<Slots> {
        Arc::new(Slots {
            count: count.max(1),
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client's request takes a slot; when none is free and memory holds one, the newest
    /// memory call not yet asked is asked to give way.
    pub fn client(self: &Arc<Self>, origin: &str) -> Slot {
        let mut st = self.state();
        if st.clients + st.memory.len() >= self.count {
            if let Some(call) = st.memory.iter_mut().rev().find(|c| c.ask.is_some()) {
                *call.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + call.grace);
                call.ask = None;
                log::info!(
                    "{origin}: every slot is taken ({}); a memory call gives way to a client's request within {} ms",
                    self.count,
                    call.grace.as_millis()
                );
            }
        }
        st.clients += 1;
        st.last_client = Some(Instant::now());
        Slot {
            slots: self.clone(),
            kind: Kind::Client,
        }
    }

    /// Waits until a slot is free and no client's request has started or ended for `quiet`:
    /// memory's calls use the server's spare time, not the pauses between a user's turns.
    pub async fn until_free(&self, quiet: Duration) {
        loop {
            let wait = {
                let st = self.state();
                let idle = st.last_client.map_or(quiet, |t| t.elapsed());
                match st.clients + st.memory.len() < self.count {
                    true if idle >= quiet => return,
                    true => quiet - idle,
                    false => quiet,
                }
            };
            Timer::after(wait.max(Duration::from_millis(10))).await;
        }
    }

    /// A memory call takes a slot; asked to give way, it has `grace` to finish.
    pub fn memory(self: &Arc<Self>, grace: Duration) -> Slot {
        let mut st = self.state();
        let id = st.next_id;
        st.next_id += 1;
        let (ask, asked) = smol::channel::bounded(1);
        let deadline = Arc::new(Mutex::new(None));
        st.memory.push(Call {
            id,
            grace,
            ask: Some(ask),
            deadline: deadline.clone(),
        });
        Slot {
            slots: self.clone(),
            kind: Kind::Memory { id, asked, deadline },
        }
    }
}

impl Slot {
    /// Resolves when the request must end: for a memory call asked to give way, once its grace
    /// has passed; never for a client's request.
    pub async fn given_way(&self) {
        match &self.kind {
            Kind::Client => std::future::pending().await,
            Kind::Memory { asked, deadline, .. } => {
                // Closed when asked (nothing is ever sent): every wait after that ends at once.
                let _ = asked.recv().await;
                let at = *deadline.lock().unwrap_or_else(|p| p.into_inner());
                Timer::at(at.unwrap_or_else(Instant::now)).await;
            }
        }
    }
}

impl Slot {
    /// Whether a memory call's grace after being asked to give way has passed.
    pub fn has_given_way(&self) -> bool {
        match &self.kind {
            Kind::Client => false,
            Kind::Memory { deadline, .. } => deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|d| Instant::now() >= d),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.slots.state();
        match &self.kind {
            Kind::Client => {
                st.clients -= 1;
                st.last_client = Some(Instant::now());
            }
            Kind::Memory { id, .. } => st.memory.retain(|c| c.id != *id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn ended(slot: &Slot) -> bool {
        future::block_on(future::or(
            async {
                slot.given_way().await;
                true
            },
            async {
                Timer::after(Duration::from_millis(30)).await;
                false
            },
        ))
    }

    #[test]
    fn a_client_finding_every_slot_taken_asks_the_newest_memory_call_to_give_way() {
        let slots = Slots::new(2);
        let old = slots.memory(Duration::ZERO);
        let new = slots.memory(Duration::ZERO);
        assert!(!ended(&old) && !ended(&new));
        let first = slots.client("test");
        assert!(ended(&new), "two slots, two memory calls: the newest gives way");
        assert!(!ended(&old));
        drop(new);
        // One slot for the client, one for the old call: the next client asks it too.
        let second = slots.client("test");
        assert!(ended(&old));
        assert!(!ended(&first) && !ended(&second), "clients never give way");
    }

    #[test]
    fn memory_waits_for_a_free_slot_and_a_quiet_spell() {
        let slots = Slots::new(1);
        let free = |quiet| {
            future::block_on(future::or(
                async {
                    slots.until_free(quiet).await;
                    true
                },
                async {
                    Timer::after(Duration::from_millis(60)).await;
                    false
                },
            ))
        };
        assert!(free(Duration::from_millis(20)), "never used: free at once");
        let client = slots.client("test");
        assert!(!free(Duration::ZERO), "the one slot is taken");
        drop(client);
        assert!(!free(Duration::from_millis(500)), "a client just ended");
        assert!(free(Duration::from_millis(20)));
    }

    #[test]
    fn a_free_slot_leaves_memory_alone_and_grace_is_waited() {
        let slots = Slots::new(2);
        let call = slots.memory(Duration::from_millis(200));
        let client = slots.client("test");
        assert!(!ended(&call), "a slot was free");
        drop(client);
        let _a = slots.client("test");
        let _b = slots.client("test");
        assert!(!ended(&call), "asked, but within its grace");
        std::thread::sleep(Duration::from_millis(200));
        assert!(ended(&call));
    }
}
