//! The client's one error type.
//!
//! No variant ever holds the client token: requests carry it in a header
//! marked sensitive, and errors are built from status codes, the server's
//! `errors` messages (which the server promises never contain secrets),
//! transport failures (which name the URL, never headers) and decode
//! failures (which report *where* decoding failed, never the offending value).

use std::path::PathBuf;

use vault_api::ErrorResponse;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-success status. `errors` holds the
    /// messages of Vault's `{"errors": [...]}` body (possibly empty: Vault
    /// answers a bare 404 for "nothing here").
    #[error("{}", api_message(*status, errors))]
    Api {
        /// HTTP status code.
        status: u16,
        /// The server's messages.
        errors: Vec<String>,
    },

    /// The request could not be sent or the response not received
    /// (connection refused, TLS failure, timeout, ...).
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),

    /// The server answered success but the body was not what the endpoint
    /// promises.
    #[error("could not decode the response of {path}: {detail}")]
    Decode {
        /// The API path whose response failed to decode.
        path: String,
        /// What went wrong (category and position; never the value itself).
        detail: String,
    },

    /// The response body was longer than the client accepts
    /// ([`crate::ClientBuilder::max_response_bytes`]); nothing of it is kept.
    #[error("the response of {path} is too large (more than {limit} bytes)")]
    ResponseTooLarge {
        /// The API path whose response was refused.
        path: String,
        /// The limit, bytes.
        limit: u64,
    },

    /// The client is misconfigured: bad address, unreadable CA file,
    /// unusable token characters, ...
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// An argument given to a client method is unusable (for example a path
    /// with `..` segments).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A credential file (AppRole role or secret ID, service-account token,
    /// JWT, ...) could not be read or is empty. Names the file, never its
    /// contents.
    #[error("cannot read the {what} file {}: {reason}", path.display())]
    CredentialFile {
        /// What the file should hold (e.g. "AppRole secret ID").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },

    /// A login or token operation is impossible with what the client has
    /// (no token and nothing to log in with, a token that cannot be
    /// renewed, ...).
    #[error("authentication: {0}")]
    Auth(String),

    /// A stream ([`crate::stream`]) failed a check of its format while
    /// being encrypted or decrypted here (local mode): wrong associated
    /// data, a damaged or tampered stream, a truncated one, a header that
    /// is not a stream's, or parameters the format refuses.
    #[error("{}", stream_message(.0))]
    Stream(vault_stream::StreamError),

    /// The server aborted a streamed answer after it had started (the body
    /// ended early or the connection was reset). For decryption this is
    /// how the server reports a stream that is truncated or was tampered
    /// with: it found out after the first plaintext bytes had left. The
    /// output is incomplete and must be discarded.
    #[error(
        "stream truncated or tampered: the server aborted its answer before the end (or the connection was lost); \
         the output is incomplete"
    )]
    StreamAborted,

    /// Neither side of a streamed request moved for this long (the
    /// client's timeout).
    #[error("the streamed request made no progress for {0:?}")]
    StreamStalled(std::time::Duration),

    /// Reading the input or writing the output of a stream failed. Names
    /// the file (or stdin / stdout), never the data.
    #[error("{what}: {source}")]
    Io {
        /// What was being read or written, e.g. "cannot read /data/in.bin".
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The message of a local stream failure: the format crate's words, with
/// what a user can do about the two that matter.
fn stream_message(e: &vault_stream::StreamError) -> String {
    use vault_stream::StreamError as S;
    match e {
        S::Authentication => "stream authentication failed: wrong associated data, another key's stream, \
                              or the stream is damaged or was tampered with"
            .into(),
        S::Truncated => "stream truncated: it ends before its final segment".into(),
        other => other.to_string(),
    }
}

impl From<vault_stream::StreamError> for Error {
    fn from(e: vault_stream::StreamError) -> Error {
        Error::Stream(e)
    }
}

impl Error {
    /// The HTTP status, for [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether this is an API error with status 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Api { status: 404, .. })
    }

    /// Whether the server refused the token or the request (403: unknown,
    /// expired or revoked token, or no policy grants the request).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Api { status: 403, .. })
    }

    /// Whether the server answered 503 (sealed, standby, not ready).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Api { status: 503, .. })
    }

    /// Whether a stream was found truncated or tampered with: locally
    /// ([`Error::Stream`] authentication or truncation) or by the server
    /// ([`Error::StreamAborted`]).
    pub fn is_stream_damaged(&self) -> bool {
        use vault_stream::StreamError as S;
        matches!(self, Error::StreamAborted | Error::Stream(S::Authentication | S::Truncated))
    }

    /// Whether the server could not be reached or the answer not received
    /// (connection refused, TLS failure, timeout, ...).
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Http(_))
    }

    /// Build an [`Error::Api`] from a non-success response: parse Vault's
    /// `{"errors": [...]}`; any other non-empty body becomes one message
    /// (truncated), so a proxy's error page still says something useful.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        let errors = match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(r) => r.errors,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                if text.is_empty() { Vec::new() } else { vec![truncate(text, 512)] }
            }
        };
        Error::Api { status, errors }
    }

    /// Build an [`Error::Decode`] from a serde error without echoing the
    /// value that failed (serde's messages can quote it, and it may be a
    /// secret).
    pub(crate) fn decode(path: &str, e: &serde_json::Error) -> Error {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Io => "I/O error",
            Category::Syntax => "invalid JSON",
            Category::Data => "unexpected JSON shape",
            Category::Eof => "truncated JSON",
        };
        let detail =
            if e.line() == 0 { kind.to_string() } else { format!("{kind} at line {} column {}", e.line(), e.column()) };
        Error::Decode { path: path.to_string(), detail }
    }
}

fn api_message(status: u16, errors: &[String]) -> String {
    let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let head = if reason.is_empty() {
        format!("server returned {status}")
    } else {
        format!("server returned {status} {reason}")
    };
    match errors.len() {
        0 => head,
        1 => format!("{head}: {}", errors[0]),
        _ => format!("{head}:\n  * {}", errors.join("\n  * ")),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parses_vault_error_body() {
        let e = Error::from_response(400, br#"{"errors":["missing client token","second"]}"#);
        match &e {
            Error::Api { status, errors } => {
                assert_eq!(*status, 400);
                assert_eq!(errors, &vec!["missing client token".to_string(), "second".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let shown = e.to_string();
        assert!(shown.contains("400 Bad Request"), "{shown}");
        assert!(shown.contains("missing client token") && shown.contains("second"), "{shown}");
        assert_eq!(e.status(), Some(400));
        assert!(!e.is_not_found());
    }

    #[test]
    fn bare_404_has_no_messages() {
        let e = Error::from_response(404, br#"{"errors":[]}"#);
        assert!(e.is_not_found());
        assert!(matches!(&e, Error::Api { errors, .. } if errors.is_empty()));
        assert_eq!(e.to_string(), "server returned 404 Not Found");
        let e = Error::from_response(404, b"");
        assert!(matches!(&e, Error::Api { errors, .. } if errors.is_empty()));
    }

    #[test]
    fn non_json_body_becomes_one_truncated_message() {
        let e = Error::from_response(502, b"<html>Bad Gateway</html>\n");
        assert!(matches!(&e, Error::Api { errors, .. } if errors == &vec!["<html>Bad Gateway</html>".to_string()]));
        let long = "é".repeat(1000);
        let Error::Api { errors, .. } = Error::from_response(500, long.as_bytes()) else { panic!() };
        assert!(errors[0].len() <= 515 && errors[0].ends_with("..."));
    }

    #[test]
    fn decode_errors_do_not_echo_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let err = serde_json::from_str::<T>(r#"{"n": "hvs.SECRETVALUE"}"#).unwrap_err();
        // serde itself would quote the value...
        assert!(err.to_string().contains("SECRETVALUE"));
        // ...our error does not.
        let e = Error::decode("sys/x", &err);
        assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
        assert!(!format!("{e:?}").contains("SECRETVALUE"));
        assert!(e.to_string().contains("sys/x"));
    }
}
