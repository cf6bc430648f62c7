//! Which requests a browser may make: the defence against web pages driving a gateway.
//!
//! A gateway on loopback without keys trusts whoever reaches it, and a browser reaches it on
//! behalf of any page it shows. Two ways in are closed here, before any route runs:
//!
//! - **DNS rebinding.** A page at `attacker.example:4000` points its own name at 127.0.0.1 and
//!   is then same-origin with the gateway: it may read every answer. Its requests still name
//!   `attacker.example` in `Host`, so only IP literals, `localhost` (and `*.localhost`, which
//!   browsers resolve to loopback themselves, never through DNS) and the names an operator lists
//!   (`[server] allowed_hosts`) are served; anything else is a 421.
//! - **Cross-origin requests.** A page elsewhere may still *send* (a `no-cors` POST with a Blob
//!   body has no Content-Type and needs no preflight), even if it cannot read the answer. Every
//!   such request carries `Origin` (all POST, PATCH, DELETE, and cross-origin GETs) or
//!   `Sec-Fetch-Site`; one that is not the gateway's own origin (or listed in
//!   `[server] allowed_origins`) is a 403. Same-site is refused too: another port or subdomain
//!   of the same site is another origin, another program.
//!
//! Clients that are not browsers (SDKs, curl) send neither header and are unaffected; the
//! dashboard's own calls are same-origin.

use crate::error::ApiError;
use http_types::{Method, Request};

/// Why a request was refused, for `memgate_rejected_total`.
pub type Refusal = (&'static str, ApiError);

/// The hosts and origins served, from `[server]`.
#[derive(Debug, Clone, Default)]
pub struct BrowserPolicy {
    /// Lowercase host names (no port).
    hosts: Vec<String>,
    /// Lowercase `scheme://host[:port]`.
    origins: Vec<String>,
}

impl BrowserPolicy {
    pub fn new(hosts: &[String], origins: &[String]) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        BrowserPolicy {
            hosts: lower(hosts),
            origins: lower(origins),
        }
    }

    /// Refuses a request a browser made for a page that is not the gateway's own. `page`: the
    /// request is for one of the dashboard's files, which a link on another site may open
    /// (a navigation: the page holds no data, and its own calls are then same-origin).
    pub fn check(&self, req: &Request, page: bool) -> Result<(), Refusal> {
        let header = |name: &str| req.header(name).map(|v| v.last().as_str().trim().to_ascii_lowercase());
        // The head guard let through only one `host[:port]`; async-h1 refuses a request without.
        let host = header("host").unwrap_or_default();
        if !self.serves_host(&host) {
            return Err(("misdirected_host", misdirected(&host)));
        }
        if let Some(origin) = header("origin") {
            let own = origin == format!("http://{host}") || origin == format!("https://{host}");
            if own || self.origins.contains(&origin) {
                return Ok(());
            }
            return Err(("cross_origin", cross_origin(&format!("a page on {origin}"))));
        }
        match header("sec-fetch-site").as_deref() {
            None | Some("same-origin" | "none") => Ok(()),
            Some(_)
                if page && req.method() == Method::Get && header("sec-fetch-mode").as_deref() == Some("navigate") =>
            {
                Ok(())
            }
            Some(site) => Err((
                "cross_origin",
                cross_origin(&format!("a page on another site (Sec-Fetch-Site: {site})")),
            )),
        }
    }

    fn serves_host(&self, host: &str) -> bool {
        if host.starts_with('[') {
            // A bracketed IPv6 literal (the head guard checked it).
            return true;
        }
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        let name = name.strip_suffix('.').unwrap_or(name);
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.hosts.iter().any(|h| h == name)
    }
}

fn misdirected(host: &str) -> ApiError {
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    ApiError::new(
        421,
        "invalid_request_error",
        Some("misdirected_request"),
        format!(
            "memgate does not answer to the host name {name:?}: it serves its IP addresses, localhost and the names in \
             [server] allowed_hosts, so that a web page cannot reach it by pointing its own name at this address \
             (DNS rebinding). Use the address, or list the name in memgate.toml: [server] allowed_hosts = [{name:?}]"
        ),
    )
}

fn cross_origin(who: &str) -> ApiError {
    ApiError::new(
        403,
        "permission_error",
        Some("cross_origin_request"),
        format!(
            "memgate does not serve requests made by {who}: any web page could otherwise use this gateway and its \
             memory. Its own dashboard works; if a proxy in front serves it under another origin, list that origin \
             in memgate.toml: [server] allowed_origins = [\"https://…\"]"
        ),
    )
}
