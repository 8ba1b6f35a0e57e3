//! `sys/metrics`: the Prometheus scrape (Vault's path and query parameter).
//! A token with `read` on `sys/metrics` is needed, unless the server's
//! `[telemetry] unauthenticated_metrics_access = true`: then the HTTP layer
//! serves it without a token, sealed or not, as Vault does.

use serde_json::{Map, Value};

use crate::core::Core;
use crate::logical::{LogicalError, RawBody, Response, fields};

/// The route (relative to `sys/`).
pub(crate) const PATH: &str = "metrics";

/// The answer to a read of `sys/metrics` with `data` (the query parameters).
/// Only the Prometheus text format is served: Vault's default JSON dump of
/// its in-memory sink has no counterpart here, so asking for it (or for
/// nothing) is a 400 that says what to ask for.
pub fn answer(core: &Core, data: &Map<String, Value>) -> Result<Response, LogicalError> {
    match fields::string(data, "format")?.as_deref() {
        Some("prometheus") => Ok(Response::Raw {
            content_type: crate::metrics::CONTENT_TYPE.into(),
            body: RawBody::Bytes(core.metrics().render(core).into()),
        }),
        // The caller's value is not repeated (it may be anything, of any length).
        Some(_) => Err(LogicalError::InvalidRequest(
            "unsupported metrics format: this server exports format=prometheus only".into(),
        )),
        None => Err(LogicalError::InvalidRequest(
            "metrics are served in the Prometheus text format only: add ?format=prometheus".into(),
        )),
    }
}
