//! The gateway an evaluation talks to: one started in this process on a loopback port with a
//! throwaway database, or a running one (`--url`). Either way every call is real HTTP, so the
//! benchmark measures the path applications use.

use crate::app::App;
use crate::config::{AuthMode, Config, Timeouts};
use crate::http::Server;
use crate::store::Store;
use crate::upstream::{Client, UpstreamRequest};
use http_types::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the last background memory runs get to finish before an in-process gateway stops.
const DRAIN: Duration = Duration::from_secs(120);

/// A gateway to send requests to.
pub struct Gateway {
    base: String,
    key: Option<String>,
    client: Client,
    local: Option<Local>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("base", &self.base)
            .field("in_process", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

/// What an in-process gateway needs to stop cleanly and leave nothing behind.
struct Local {
    app: Arc<App>,
    server: Arc<Server>,
    serving: smol::Task<()>,
    dir: PathBuf,
}

/// A failed call: what the gateway said, for the results file and the log.
pub type CallError = String;

impl Gateway {
    /// A gateway already running at `url` (`http://host:port`), called with `key` if given.
    pub fn remote(url: &str, key: Option<String>) -> Gateway {
        Gateway {
            base: url.trim_end_matches('/').trim_end_matches("/v1").to_owned(),
            key,
            client: Client::new(Timeouts::default(), &Default::default()),
            local: None,
        }
    }

    /// Starts a gateway in this process from `config`, as `serve` would, but on 127.0.0.1 at a
    /// free port, with a fresh database in a temporary directory (the user's memory is never
    /// touched), without keys, rate limits or `max_in_flight` (the runner is its only client),
    /// and with `observer_model` defaulting to `model`: history is imported through the Memory
    /// API, which has no request model for the observer to fall back on.
    pub async fn start(mut config: Config, model: &str) -> Result<Gateway, String> {
        let dir = std::env::temp_dir().join(format!(
            "memgate-eval-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        config.data_dir = Some(dir.clone());
        config.auth.mode = Some(AuthMode::None);
        config.limits.rpm = None;
        config.limits.tpm = None;
        config.limits.max_in_flight = None;
        config.limits.max_connections = None;
        config.memory.observer_model.get_or_insert_with(|| model.to_owned());
        let store = Store::open_reporting(&dir, crate::notify::extend_timeout)
            .map_err(|e| format!("cannot open a database in {}: {e}", dir.display()))?;
        let listener = smol::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let app = Arc::new(App::new(&config, addr, store)?);
        let server = Server::new(crate::reload::server_options(&config));
        let handler_app = app.clone();
        let handler = move |req, peer| crate::api::handle(handler_app.clone(), req, peer);
        let serving = {
            let server = server.clone();
            crate::runtime::spawn(async move { server.serve(listener, handler).await })
        };
        crate::runtime::spawn(crate::serve::flush_usage(Arc::downgrade(&app))).detach();
        log::info!("eval: in-process gateway on http://{addr} (data in {})", dir.display());
        Ok(Gateway {
            base: format!("http://{addr}"),
            key: None,
            client: Client::new(config.timeouts.clone(), &config.limits),
            local: Some(Local {
                app,
                server,
                serving,
                dir,
            }),
        })
    }

    /// Whether this gateway lives in this process (and its memory goes away with it).
    pub fn in_process(&self) -> bool {
        self.local.is_some()
    }

    /// Sends one request; the answer's status and JSON body (`Null` when it has none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallError> {
        let mut all = headers.to_vec();
        if let Some(k) = &self.key {
            all.push(("authorization", format!("Bearer {k}")));
        }
        let req = UpstreamRequest {
            method,
            url: format!("{}{path}", self.base),
            headers: all,
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
            gives_way: None,
        };
        let res = self.client.send(&req).await.map_err(|e| e.message)?;
        let status = res.status;
        let bytes = res.bytes().await.map_err(|e| e.message)?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("{method} {path}: {status} with a body that is not JSON ({e})"))?
        };
        Ok((status, json))
    }

    /// A call that must succeed: a 2xx answer's JSON, else the gateway's error message.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let (status, json) = self.call(method, path, headers, body).await?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let why = json["error"]["message"]
            .as_str()
            .map_or_else(|| json.to_string(), str::to_owned);
        Err(format!("{method} {path}: {status} {why}"))
    }

    /// Stops an in-process gateway: memory runs still under way get [`DRAIN`] to finish (so
    /// their tokens are counted), then the database closes and its directory is deleted.
    pub async fn stop(self) {
        let Some(local) = self.local else { return };
        let background = local.app.memory.background();
        background.close();
        let drained = futures_lite::future::or(
            async {
                background.ended().await;
                true
            },
            async {
                smol::Timer::after(DRAIN).await;
                false
            },
        )
        .await;
        if !drained {
            log::warn!("eval: memory runs still going after {} s; cut off", DRAIN.as_secs());
            background.cancel().await;
        }
        local.server.stop();
        local.serving.await;
        local.server.abandon().await;
        if let Err(e) = local.app.usage.flush(&local.app.store).await {
            log::warn!("eval: usage counts not written: {e}");
        }
        drop(local.app);
        // The writer thread lets go of the file once the last handle is gone.
        let _ = std::fs::remove_dir_all(&local.dir);
    }

    /// Deletes an in-process gateway's database directory at once, for a run that is being
    /// abandoned (interrupted, or failed): the process exits next, so nothing waits for the
    /// requests still in flight.
    pub fn discard(&self) {
        if let Some(local) = &self.local {
            let _ = std::fs::remove_dir_all(&local.dir);
        }
    }

    /// Memory runs started after the last request, still under way (in-process only): the
    /// summary waits for them so their tokens are counted.
    pub async fn settle(&self) {
        let Some(local) = &self.local else { return };
        let deadline = std::time::Instant::now() + DRAIN;
        while !local.app.memory.background().is_empty() && std::time::Instant::now() < deadline {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    }
}
