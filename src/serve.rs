//! `memgate serve`: open the store, bind, and run until SIGTERM/SIGINT.

use crate::app::App;
use crate::config::Config;
use crate::http::{serve, ServerOptions};
use crate::store::{Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

pub fn run(config: Config) -> Result<(), String> {
    let listen = config.listen_addr()?;
    config.check_exposure(listen)?;
    let data_dir = config.data_dir();
    let store = Store::open(&data_dir).map_err(|e| match e {
        StoreError::Locked(p) => format!(
            "{} is in use: another memgate is running with this data_dir; stop it or pass --data-dir",
            p.display()
        ),
        e => e.to_string(),
    })?;
    let app = Arc::new(App::new(&config, listen, store.clone())?);
    let opts = ServerOptions {
        header_timeout: Duration::from_millis(config.timeouts.header_ms),
        keepalive_timeout: Duration::from_millis(config.timeouts.keepalive_ms),
    };
    crate::runtime::block_on(async move {
        let listener = smol::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
        let signals = async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        crate::runtime::spawn(async move {
            use futures_lite::StreamExt;
            let mut signals = signals;
            if let Some(Ok(sig)) = signals.next().await {
                log::info!("received {sig:?}, shutting down");
            }
            drop(stop_tx);
        })
        .detach();
        match crate::admin::bind(&data_dir) {
            Ok(socket) => crate::runtime::spawn(crate::admin::listen(socket, store)).detach(),
            Err(e) => log::warn!("admin socket unavailable ({e}); CLI commands need the server stopped"),
        }
        log::info!(
            "memgate {} listening on http://{bound} (auth: {:?}; data: {}; providers: {})",
            env!("CARGO_PKG_VERSION"),
            app.auth,
            data_dir.display(),
            config.provider_names()
        );
        crate::runtime::spawn(crate::usage::flusher(Arc::downgrade(&app))).detach();
        let handler_app = app.clone();
        serve(
            listener,
            opts,
            move |req, peer| crate::api::handle(handler_app.clone(), req, peer),
            stop_rx,
        )
        .await;
        if let Err(e) = app.usage.flush(&app.store).await {
            log::error!("the last usage counts could not be written: {e}");
        }
        Ok(())
    })
}
