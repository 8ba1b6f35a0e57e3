//! When a failed request is sent again, and how long to wait first.
//!
//! Vault's Go client (and so its CLI) retries every request on a connection
//! error or any 5xx, twice by default (`VAULT_MAX_RETRIES`), waiting 1 to
//! 1.5 s. This client keeps those defaults but is stricter about what may
//! run twice, because in Vault's API a `PUT`/`POST` is rarely idempotent (a
//! KV v2 write makes a new version, a token create mints another token, a
//! login spends a secret ID use):
//!
//! * **connection refused / DNS / connect timeout**: the request never
//!   reached the server, so any method is retried;
//! * **503 Service Unavailable** (sealed, standby, not ready): the server
//!   refused the request before acting on it, so any method is retried;
//! * **other 5xx, timeouts and connections lost mid-request**: the server
//!   may have acted, so only reads (`GET`, `HEAD`, `LIST`) are retried;
//! * **4xx**: never (the same request would get the same answer; 429 is a
//!   lockout or rate budget that a quick retry would only extend);
//! * **TLS failures** (a refused certificate): never;
//! * `sys/health` answers with status codes that *are* its answer (503
//!   means "sealed"), so its statuses are never retried;
//! * a streamed request ([`crate::stream`]: a file's upload) is never
//!   retried: its body cannot be sent twice (it goes through
//!   `Client::stream_request`, not through the retry loop);
//! * a KV v2 blocking read (a long poll with its own timeout) is not retried
//!   by the client: its callers ([`crate::Follow`], watchers) loop with
//!   their own backoff, and an error must reach them promptly.
//!
//! Waits use exponential backoff with full jitter: before retry `n` (0 for
//! the first), a uniformly random wait in `[0, min(max, min_wait * 2^n)]`,
//! so many clients hitting a server that is coming back do not retry in step.

use std::time::Duration;

use reqwest::{Method, StatusCode};

/// Retries by default (Vault's `VAULT_MAX_RETRIES` default).
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default cap of the first retry's wait (Vault's minimum retry wait).
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(1000);
/// Default cap of any retry's wait (Vault's maximum retry wait).
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_millis(1500);

/// How a client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: DEFAULT_MAX_RETRIES, min: DEFAULT_RETRY_MIN, max: DEFAULT_RETRY_MAX }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait before retry `attempt` (0-based).
    pub(crate) fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry `attempt`: uniform in `[0, cap(attempt)]`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(rand::random_range(0..=nanos)) }
    }
}

/// Whether `method` only reads (safe to send twice whatever happened).
fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || method.as_str() == "LIST"
}

/// Whether an answer with `status` to `method` on API path `path` is retried.
pub(crate) fn retry_status(method: &Method, path: &str, status: StatusCode) -> bool {
    if path.trim_matches('/') == "sys/health" {
        return false;
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return true;
    }
    status.is_server_error() && is_read(method)
}

/// Whether a transport error for `method` is retried.
pub(crate) fn retry_error(method: &Method, e: &reqwest::Error) -> bool {
    if crate::tls::is_tls_failure(e) {
        return false;
    }
    if e.is_connect() {
        return true;
    }
    // Timeouts, resets, truncated bodies: the server may have acted.
    is_read(method) && (e.is_timeout() || e.is_request() || e.is_body())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy { max_retries: 5, min: Duration::from_millis(100), max: Duration::from_millis(700) };
        assert_eq!(p.cap(0), Duration::from_millis(100));
        assert_eq!(p.cap(1), Duration::from_millis(200));
        assert_eq!(p.cap(2), Duration::from_millis(400));
        assert_eq!(p.cap(3), Duration::from_millis(700));
        assert_eq!(p.cap(40), Duration::from_millis(700));
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = p.delay(2);
            assert!(d <= Duration::from_millis(400));
            distinct.insert(d);
        }
        // Full jitter: not the same wait every time.
        assert!(distinct.len() > 100);
        let zero = RetryPolicy { max_retries: 1, min: Duration::ZERO, max: Duration::ZERO };
        assert_eq!(zero.delay(3), Duration::ZERO);
    }

    #[test]
    fn which_statuses_are_retried() {
        let list = Method::from_bytes(b"LIST").unwrap();
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        // 503 (sealed, standby): any method.
        for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE, list.clone()] {
            assert!(retry_status(&m, "secret/data/x", s(503)), "{m}");
        }
        // Other 5xx: reads only.
        assert!(retry_status(&Method::GET, "secret/data/x", s(500)));
        assert!(retry_status(&list, "secret/metadata/", s(502)));
        assert!(!retry_status(&Method::POST, "secret/data/x", s(500)));
        assert!(!retry_status(&Method::PUT, "auth/approle/login", s(502)));
        // 4xx and successes: never.
        for c in [200, 204, 400, 403, 404, 405, 412, 429] {
            assert!(!retry_status(&Method::GET, "secret/data/x", s(c)), "{c}");
        }
        // Health reports its state with status codes.
        assert!(!retry_status(&Method::GET, "sys/health", s(503)));
        assert!(!retry_status(&Method::GET, "/sys/health", s(500)));
    }
}
