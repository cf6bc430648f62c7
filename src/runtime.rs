//! The executor every task runs on: one smol `Executor`, one thread per available core.
//!
//! smol's global executor starts a single thread unless `SMOL_THREADS` is set; a gateway wants
//! every core it is given (and no more: under `taskset` or a cgroup CPU limit,
//! `available_parallelism` reports the allowed count).

use async_executor::{Executor, Task};
use std::future::Future;

static EXECUTOR: Executor<'static> = Executor::new();

/// Spawns a task onto the shared executor.
pub fn spawn<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> Task<T> {
    EXECUTOR.spawn(future)
}

/// Runs `future` to completion while worker threads serve spawned tasks.
///
/// The workers live for the rest of the process; `block_on` is called once per process
/// (tests use [`start_workers`] and their own `block_on`).
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    start_workers();
    smol::block_on(EXECUTOR.run(future))
}

/// Starts the worker threads once.
pub fn start_workers() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..n {
            std::thread::Builder::new()
                .name(format!("memgate-worker-{i}"))
                .spawn(|| smol::block_on(EXECUTOR.run(futures_lite::future::pending::<()>())))
                .expect("spawning a worker thread at start-up");
        }
    });
}
