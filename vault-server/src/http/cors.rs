//! CORS as Vault answers it, once enabled through `sys/config/cors`:
//! requests from an origin not allowed get a 403 (preflight or not);
//! allowed origins get `Access-Control-Allow-Origin` (their own origin, so
//! `Vary: Origin`), and a preflight `OPTIONS` a 204 with the methods and
//! headers allowed. Off (the default), no CORS header is ever sent and
//! `OPTIONS` is a 405 like any unknown method.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::core::Core;
use crate::sys::cors::METHODS;

use super::ApiError;

/// What to do with a request, as far as CORS goes.
pub(super) enum Cors {
    /// No CORS involved (disabled, or no `Origin`).
    None,
    /// Serve it, then add these headers.
    Allow(HeaderValue),
    /// Answer now (a preflight, or a refused origin).
    Answer(Response),
}

/// Look at the request's `Origin`.
pub(super) fn check(core: &Core, method: &Method, headers: &HeaderMap) -> Cors {
    let Some(origin) = headers.get(header::ORIGIN) else { return Cors::None };
    let config = core.cors().get();
    if !config.enabled {
        return Cors::None;
    }
    let allowed = origin.to_str().is_ok_and(|o| config.allows(o));
    if !allowed {
        return Cors::Answer(ApiError::new(StatusCode::FORBIDDEN, "origin not allowed").into_response());
    }
    if method == Method::OPTIONS {
        let mut r = super::no_content();
        let h = r.headers_mut();
        add(h, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
        if let Ok(v) = HeaderValue::from_str(&config.allow_headers()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("300"));
        return Cors::Answer(r);
    }
    Cors::Allow(origin.clone())
}

/// The headers on an answer to an allowed origin.
pub(super) fn add(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}
