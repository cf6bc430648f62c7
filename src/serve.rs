//! `memgate serve`: open the store, bind, and serve; reload the config on SIGHUP; on SIGTERM or
//! SIGINT shut down gracefully.
//!
//! Shutdown stops accepting at once (the listener closes, so new connections are refused) and
//! closes idle keep-alive connections. Requests in flight, open streams included, and
//! background memory runs get `[timeouts] shutdown_ms` to finish; a second SIGTERM/SIGINT ends
//! the wait early. What is still running then is cancelled: the store's writer thread commits
//! whatever it was handed (each exchange or observation is one transaction, whole or absent),
//! and once the last handle on the store goes the thread is joined and the file closed cleanly.
//! systemd hears READY=1 once we listen and STOPPING=1 when shutdown starts (see `notify`).

use crate::app::App;
use crate::config::Config;
use crate::http::Server;
use crate::notify;
use crate::reload::{server_options, ConfigFile, Live};
use crate::store::{Store, StoreError};
use crate::usage::FLUSH_EVERY;
use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use smol::{Task, Timer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After cut-off streams' relay tasks were told, how long they get to store their partial
/// answers and let go of the store, so the database closes cleanly.
const RELEASE_GRACE: Duration = Duration::from_secs(1);

pub fn run(config: Config, file: Option<ConfigFile>) -> Result<(), String> {
    let listen = config.listen_addr()?;
    config.check_exposure(listen)?;
    let data_dir = config.data_dir();
    let store = Store::open_reporting(&data_dir, notify::extend_timeout).map_err(|e| match e {
        StoreError::Locked(p) => format!(
            "{} is in use: another memgate is running with this data_dir; stop it or pass --data-dir",
            p.display()
        ),
        e => e.to_string(),
    })?;
    if store.repaired() {
        log::warn!(
            "{} was not closed cleanly (a crash or kill -9); it was repaired to its last commit",
            data_dir.join(crate::store::DB_FILE).display()
        );
    }
    store.set_quota(config.limits.max_stored_bytes_per_key);
    let app = Arc::new(App::new(&config, listen, store.clone())?);
    let server = Server::new(server_options(&config));
    let mut live = Live::new(config, file);
    crate::runtime::block_on(async move {
        let listener = smol::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let admin = match crate::admin::bind(&data_dir) {
            Ok(socket) => Some(crate::runtime::spawn(crate::admin::listen(socket, store.clone()))),
            Err(e) => {
                log::warn!("admin socket unavailable ({e}); CLI commands need the server stopped");
                None
            }
        };
        log::info!(
            "memgate {} listening on http://{bound} (auth: {:?}; data: {}; providers: {})",
            env!("CARGO_PKG_VERSION"),
            app.auth,
            data_dir.display(),
            live.config().provider_names()
        );
        crate::runtime::spawn(flush_usage(Arc::downgrade(&app))).detach();
        notify::send(&format!("READY=1\nSTATUS=serving on http://{bound}"));
        if let Some(every) = notify::watchdog_interval() {
            crate::runtime::spawn(notify::watchdog(every)).detach();
        }
        let handler_app = app.clone();
        let handler = move |req, peer| crate::api::handle(handler_app.clone(), req, peer);
        let watch = async {
            // A store that cannot be reopened after a failed write stores nothing more: stop
            // as for SIGTERM (what is in flight gets its answer), then exit non-zero below.
            let dead = async {
                store.dead().await;
                DEAD_STORE
            };
            let why = future::or(until_stop(&mut signals, &mut live, &app, &server), dead).await;
            server.stop();
            why
        };
        let ((), why) = future::zip(server.serve(listener, handler), watch).await;
        let bound = Duration::from_millis(live.config().timeouts.shutdown_ms);
        shutdown(why, bound, &mut signals, app, store, admin, &server).await;
        if why == DEAD_STORE {
            return Err(
                "the database could not be reopened after a failed write; exiting so the service restarts".to_owned(),
            );
        }
        Ok(())
    })
}

/// Why a shutdown started when the store died.
const DEAD_STORE: &str = "the database cannot be reopened";

/// Writes the usage ledger every [`FLUSH_EVERY`] for as long as the app lives.
pub(crate) async fn flush_usage(app: std::sync::Weak<App>) {
    loop {
        Timer::after(FLUSH_EVERY).await;
        let Some(app) = app.upgrade() else { return };
        if let Err(e) = app.usage.flush(&app.store).await {
            log::warn!("usage counts could not be written yet ({e}); they are kept and retried");
        }
    }
}

/// Reloads on SIGHUP until SIGTERM or SIGINT; returns which one came.
async fn until_stop(signals: &mut Signals, live: &mut Live, app: &App, server: &Server) -> &'static str {
    loop {
        match signals.next().await {
            Some(Ok(Signal::Hup)) => {
                log::info!("SIGHUP: reloading the config");
                live.reload(app, server).await;
            }
            Some(Ok(Signal::Int)) => return "SIGINT",
            Some(Ok(_)) => return "SIGTERM",
            // Signal delivery itself failed: nothing sensible to do but stop as asked.
            Some(Err(_)) | None => return "signal stream ended",
        }
    }
}

/// Resolves on the next SIGTERM or SIGINT (a reload is no use while shutting down).
async fn next_stop(signals: &mut Signals) {
    while let Some(Ok(Signal::Hup)) = signals.next().await {}
}

/// Drains within `bound`, cancels the rest, and closes the store.
async fn shutdown(
    why: &str,
    bound: Duration,
    signals: &mut Signals,
    app: Arc<App>,
    store: Store,
    admin: Option<Task<()>>,
    server: &Server,
) {
    let start = Instant::now();
    let background = app.memory.background();
    // A run started now could only be cut off; the next request past the threshold starts it.
    background.close();
    let (requests, runs, done_before) = (server.in_flight(), background.len(), server.completed());
    log::info!(
        "{why}: shutting down; no new connections; waiting up to {} ms (timeouts.shutdown_ms) for {requests} \
         request(s) in flight and {runs} memory run(s)",
        bound.as_millis()
    );
    notify::send(&format!(
        "STOPPING=1\nSTATUS=shutting down: {requests} request(s) in flight, {runs} memory run(s)"
    ));
    let finished = future::or(
        async {
            future::zip(server.drained(), background.ended()).await;
            true
        },
        async {
            let timeout = async {
                Timer::after(bound).await;
            };
            let hurry = async {
                next_stop(signals).await;
                log::info!("second stop signal: not waiting any longer");
            };
            future::or(timeout, hurry).await;
            false
        },
    )
    .await;
    let (cut_requests, cut_runs) = if finished {
        (0, 0)
    } else {
        (server.abandon().await, background.cancel().await)
    };
    let drained = server.completed() - done_before;
    if let Err(e) = app.usage.flush(&app.store).await {
        log::error!("the last usage counts could not be written: {e}");
    }
    // The admin socket served the CLI while we drained; from here the CLI opens the file itself.
    drop(admin);
    let closed = released(&app).await;
    // The last handles: dropping them joins the writer thread once its queue is committed, and
    // closes the file.
    drop(app);
    drop(store);
    log::info!(
        "shutdown done in {} ms: {drained} request(s) finished, {} memory run(s) finished; cut off {cut_requests} \
         request(s) and {cut_runs} memory run(s){}; {}",
        start.elapsed().as_millis(),
        runs.saturating_sub(cut_runs),
        if finished { "" } else { " at the bound" },
        if closed {
            "memory writes flushed, database closed"
        } else {
            "a task still held the database: writes committed so far are kept, the next start checks the file"
        }
    );
}

/// Waits (up to [`RELEASE_GRACE`]) until nothing but `app` itself holds the app.
///
/// A cut-off stream's relay task sees its socket close, stores the partial answer and ends;
/// the relay is not ours to track, so we watch for its handle on the app to go.
async fn released(app: &Arc<App>) -> bool {
    let until = Instant::now() + RELEASE_GRACE;
    while Arc::strong_count(app) > 1 {
        if Instant::now() >= until {
            return false;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    true
}
