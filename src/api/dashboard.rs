//! The dashboard: a small page compiled into the binary (`ui/`), served at `/` and `/ui`.
//!
//! The page is only a client of the public JSON API: it holds no data, so its files need no key.
//! It asks for a gateway key when the API answers 401 and sends it on every fetch. Every file
//! goes out with a Content-Security-Policy that allows only this origin (no inline script, no
//! CDN, no framing), so a thread's text rendered in the page cannot run as code, and the page
//! works offline.

use crate::error::ApiError;
use crate::http::text_response;
use http_types::{Method, Response};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Asset {
    /// Its canonical path (`/ui` for the page under all its names): a metrics label.
    pub name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    name: "/ui",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../ui/index.html"),
};

/// The policy of every dashboard response. `connect-src 'self'` keeps the key from leaving for
/// another origin; `frame-ancestors 'none'` stops another page from framing the delete buttons.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The embedded file at `path`, if it is one of the dashboard's.
pub(super) fn find(path: &str) -> Option<Asset> {
    Some(match path {
        "/" | "/ui" | "/ui/" | "/ui/index.html" => INDEX,
        "/ui/app.js" => Asset {
            name: "/ui/app.js",
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../../ui/app.js"),
        },
        "/ui/style.css" => Asset {
            name: "/ui/style.css",
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../../ui/style.css"),
        },
        "/ui/icon.svg" | "/favicon.ico" => Asset {
            name: "/ui/icon.svg",
            content_type: "image/svg+xml",
            body: include_bytes!("../../ui/icon.svg"),
        },
        _ => return None,
    })
}

/// Answers a request for `asset` (GET only; the files never change while the binary runs).
pub(super) fn serve(method: Method, path: &str, asset: Asset) -> Result<Response, ApiError> {
    if method != Method::Get {
        return Err(ApiError::method_not_allowed(method.as_ref(), path));
    }
    let mut res = text_response(200, asset.content_type, asset.body);
    res.insert_header("content-security-policy", CSP);
    res.insert_header("x-content-type-options", "nosniff");
    res.insert_header("x-frame-options", "DENY");
    res.insert_header("referrer-policy", "no-referrer");
    // A new binary may bring new files under the same names: revalidate, never guess.
    res.insert_header("cache-control", "no-cache");
    Ok(res)
}
