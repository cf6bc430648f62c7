//! Everything a request needs, built once at start-up and shared by all connections.

use crate::config::{AuthMode, Config, RetryConfig};
use crate::exchange::models::MemoryModels;
use crate::memory::Memory;
use crate::router::Router;
use crate::store::Store;
use crate::upstream::Client;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug)]
pub struct App {
    pub auth: AuthMode,
    pub store: Store,
    /// Swapped whole by a config reload (SIGHUP); see [`App::router`]. Shared with memory's
    /// model calls.
    router: Arc<RwLock<Arc<Router>>>,
    pub retry: RetryConfig,
    pub client: Client,
    pub memory: Arc<Memory>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limiter: Arc<crate::limits::Limiter>,
    /// `[limits] rpm / tpm`: for keys without their own.
    pub default_limits: crate::limits::Limits,
    /// `[limits] max_in_flight`: beyond it, a fast 503.
    pub max_in_flight: Option<u64>,
    /// `[server] allowed_hosts` / `allowed_origins`: what browsers may reach.
    pub browsers: crate::http::BrowserPolicy,
    /// `[metrics] require_key`.
    pub metrics_need_key: bool,
    /// Usage counts on their way to the database.
    pub usage: Arc<crate::usage::Ledger>,
    pub max_body: u64,
    pub body_timeout: Duration,
    /// How often an open stream gets a keep-alive comment (`None`: never).
    pub sse_keepalive: Option<Duration>,
}

impl App {
    pub fn new(config: &Config, listen: SocketAddr, store: Store) -> Result<App, String> {
        let models = MemoryModels {
            router: Arc::new(RwLock::new(Arc::new(Router::new(config)?))),
            client: Client::new(config.timeouts.clone(), &config.limits),
            retry: config.retry.clone(),
            limiter: Default::default(),
            usage: Default::default(),
            metrics: Default::default(),
        };
        Ok(App {
            auth: config.auth_mode(listen),
            router: models.router.clone(),
            retry: models.retry.clone(),
            client: models.client.clone(),
            usage: models.usage.clone(),
            metrics: models.metrics.clone(),
            limiter: models.limiter.clone(),
            memory: Arc::new(Memory::new(config, store.clone(), Arc::new(models))),
            store,
            metrics_need_key: config.metrics.require_key,
            browsers: crate::http::BrowserPolicy::new(&config.server.allowed_hosts, &config.server.allowed_origins),
            default_limits: crate::limits::Limits {
                rpm: config.limits.rpm,
                tpm: config.limits.tpm,
            },
            max_in_flight: config.limits.max_in_flight,
            max_body: config.max_body_bytes(),
            body_timeout: Duration::from_millis(config.timeouts.body_ms),
            sse_keepalive: Some(Duration::from_millis(config.timeouts.sse_keepalive_ms)).filter(|d| !d.is_zero()),
        })
    }

    /// The providers in force. A request keeps the router it started with, so a reload never
    /// changes a request half-way (a retry or a memory run goes on with the same providers).
    pub fn router(&self) -> Arc<Router> {
        self.router.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Routes requests that start from now on with `router`.
    pub fn set_router(&self, router: Router) {
        *self.router.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(router);
    }
}
