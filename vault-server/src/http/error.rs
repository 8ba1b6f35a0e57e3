//! The one place that maps errors to HTTP status codes and Vault's
//! `{"errors": [...]}` body. A 500 says "internal error" to the client; the
//! detail goes to the log (and never contains secrets: no layer puts any in
//! an error).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::core::CoreError;
use crate::logical::LogicalError;
use crate::seal::SealError;

use super::json_response;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Messages for `errors`.
    pub errors: Vec<String>,
    /// For a 405: the methods the path does serve (the `Allow` header).
    pub allow: Option<&'static str>,
    /// Headers to send with the error (a 429's `Retry-After`).
    pub headers: Option<Box<axum::http::HeaderMap>>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self { status, errors: vec![msg.into()], allow: None, headers: None }
    }
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    /// An error with an empty `errors` list (Vault does this for 404 and 405).
    pub fn empty(status: StatusCode) -> Self {
        Self { status, errors: Vec::new(), allow: None, headers: None }
    }
}

impl ApiError {
    /// 405 naming the methods `path` serves (and an `Allow` header).
    pub fn method_not_allowed(path: &str, allow: &'static str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            errors: vec![format!("unsupported method on {path}: use {allow}")],
            allow: Some(allow),
            headers: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status, &vault_api::ErrorResponse { errors: self.errors });
        if let Some(allow) = self.allow {
            r.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static(allow));
        }
        if let Some(h) = self.headers {
            r.headers_mut().extend(*h);
        }
        r
    }
}

impl From<LogicalError> for ApiError {
    fn from(e: LogicalError) -> Self {
        match e {
            LogicalError::InvalidRequest(m) | LogicalError::Conflict(m) => Self::bad_request(m),
            LogicalError::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "permission denied"),
            LogicalError::NotFound => Self::empty(StatusCode::NOT_FOUND),
            LogicalError::UnsupportedPath(m) => Self::new(StatusCode::NOT_FOUND, m),
            LogicalError::UnsupportedOperation => Self::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation"),
            LogicalError::RateLimited(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, m),
            LogicalError::Upstream(m) => Self::new(StatusCode::BAD_GATEWAY, m),
            LogicalError::Sealed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"),
            LogicalError::TooLarge(m) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, m),
            LogicalError::TimedOut(m) => Self::new(StatusCode::REQUEST_TIMEOUT, m),
            LogicalError::Busy(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
            LogicalError::Internal(detail) => internal(&detail),
        }
    }
}

impl From<SealError> for ApiError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Random => internal("random number generator failed"),
            other => Self::bad_request(other.to_string()),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Sealed => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"),
            CoreError::NotInitialized | CoreError::AlreadyInitialized | CoreError::InvalidRequest(_) => {
                Self::bad_request(e.to_string())
            }
            CoreError::Seal(s) => s.into(),
            CoreError::Logical(l) => l.into(),
            CoreError::Internal(detail) => internal(&detail),
        }
    }
}

pub(super) fn internal(detail: &str) -> ApiError {
    tracing::error!(detail, "internal error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}
