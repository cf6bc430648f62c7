//! Everything a request needs, built once at start-up and shared by all connections.

use crate::config::{AuthMode, Config};
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
    /// Swapped whole by a config reload (SIGHUP); see [`App::router`].
    router: RwLock<Arc<Router>>,
    pub client: Client,
    pub memory: Memory,
    pub max_body: u64,
    pub body_timeout: Duration,
}

impl App {
    pub fn new(config: &Config, listen: SocketAddr, store: Store) -> Result<App, String> {
        Ok(App {
            auth: config.auth_mode(listen),
            store,
            router: RwLock::new(Arc::new(Router::new(config)?)),
            client: Client::new(config.timeouts.clone()),
            memory: Memory::new(config),
            max_body: config.max_body_bytes(),
            body_timeout: Duration::from_millis(config.timeouts.body_ms),
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
