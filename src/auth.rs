//! Who is calling: the gateway key (tenant) and an optional bring-your-own provider key.
//!
//! Header rules, in order:
//! - `X-Memory-Gateway-Authorization: Bearer msk_…` names the gateway key; `Authorization` then
//!   carries the caller's provider key, which goes upstream instead of the configured one (BYOK).
//! - Otherwise `Authorization: Bearer msk_…` (or `x-api-key: msk_…`, the Anthropic SDK's
//!   header) is the gateway key.
//! - With `[auth] mode = "none"` a plain `Authorization` is a placeholder the SDKs insist on, and
//!   is ignored.
//!
//! A gateway key never goes upstream: only the BYOK key or the configured key does, and an
//! `msk_…` value offered as a BYOK key is refused (400).

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::limits::Limits;
use crate::store::Store;
use http_types::Request;

/// The authenticated caller. Its Debug hides the BYOK key.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The gateway key's tenant id (open mode's without a key); threads, observations and usage
    /// are filed under it, never under the key's name, which a later key may reuse.
    pub tenant: String,
    /// A provider key supplied by the caller, used upstream instead of the configured one.
    pub byok: Option<String>,
    /// The key's own rate limits (unset: the config's `[limits]`).
    pub limits: Limits,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("tenant", &self.tenant)
            .field("byok", &crate::config::Redacted(self.byok.as_deref()))
            .field("limits", &self.limits)
            .finish()
    }
}

impl Caller {
    /// The limits in force: the key's own, else `defaults` (`[limits]`).
    pub fn limits_or(&self, defaults: Limits) -> Limits {
        Limits {
            rpm: self.limits.rpm.or(defaults.rpm),
            tpm: self.limits.tpm.or(defaults.tpm),
        }
    }
}

fn bearer(req: &Request, name: &str) -> Option<String> {
    let v = req.header(name)?.last().as_str().trim();
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .unwrap_or(v)
        .trim();
    (!token.is_empty()).then(|| token.to_owned())
}

pub fn authenticate(mode: AuthMode, store: &Store, req: &Request) -> Result<Caller, ApiError> {
    let gateway_header = bearer(req, "x-memory-gateway-authorization");
    let authorization = bearer(req, "authorization");
    let (gateway_key, byok) = match gateway_header {
        Some(k) => (Some(k), authorization),
        None => {
            let from_auth = authorization.filter(|k| k.starts_with(crate::store::KEY_PREFIX));
            (
                from_auth.or_else(|| bearer(req, "x-api-key").filter(|k| k.starts_with("msk_"))),
                None,
            )
        }
    };
    // A gateway key in the provider-key slot (pasted twice, or someone else's) would go
    // upstream in clear: refused before anything is sent.
    if byok.as_deref().is_some_and(|k| k.starts_with(crate::store::KEY_PREFIX)) {
        return Err(ApiError::invalid(
            "Authorization holds a gateway key (msk_…) while X-Memory-Gateway-Authorization names the gateway \
             key: Authorization must then hold your provider's key (BYOK), which memgate sends upstream; \
             a gateway key is never sent upstream. Drop X-Memory-Gateway-Authorization to use the gateway's \
             configured provider keys",
        ));
    }
    let Some(key) = gateway_key else {
        return match mode {
            AuthMode::None => Ok(Caller {
                tenant: crate::store::OPEN_TENANT.to_owned(),
                byok,
                limits: Limits::default(),
            }),
            AuthMode::Keys => Err(ApiError::unauthorized(
                "missing gateway key: send `Authorization: Bearer msk_…` (create one with `memgate keys create NAME`)",
            )),
        };
    };
    match store.verify_key(&key) {
        Ok(Some(record)) => Ok(Caller {
            limits: Limits {
                rpm: record.rpm,
                tpm: record.tpm,
            },
            tenant: record.tenant,
            byok,
        }),
        Ok(None) => Err(ApiError::unauthorized("invalid or revoked gateway key")),
        Err(e) => {
            log::error!("key lookup failed: {e}");
            Err(ApiError::internal("key lookup failed; see the gateway log"))
        }
    }
}
