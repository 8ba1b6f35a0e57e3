//! Rate limits at the door: the 429 (Vault's errors shape, `Retry-After`
//! in whole seconds, rounded up) and the `X-Ratelimit-*` headers.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::quotas::{Decision, Quotas, RateInfo};

use super::ApiError;

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn secs_up(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Count the request; `Ok(Some)` carries headers to add to the answer.
pub(super) fn check(quotas: &Quotas, path: &str, ip: IpAddr) -> Result<Option<RateInfo>, ApiError> {
    match quotas.check(path, ip) {
        Decision::Allowed(info) => Ok(info),
        Decision::Limited(l) => {
            let retry = secs_up(l.retry_after);
            let mut h = HeaderMap::with_capacity(4);
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry));
            if let Some(info) = l.info {
                add_headers(&mut h, &info);
            }
            // As Vault's message; the quota's name is the operator's, not the caller's business.
            let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "request path rate limit quota exceeded");
            e.headers = Some(Box::new(h));
            Err(e)
        }
    }
}

/// The `X-Ratelimit-*` headers (Vault's names): the bucket size, what is
/// left, and seconds until it is full again.
pub(super) fn add_headers(h: &mut HeaderMap, info: &RateInfo) {
    h.insert(LIMIT.clone(), HeaderValue::from(info.limit));
    h.insert(REMAINING.clone(), HeaderValue::from(info.remaining));
    let reset = if info.reset.is_zero() { 0 } else { secs_up(info.reset) };
    h.insert(RESET.clone(), HeaderValue::from(reset));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(secs_up(Duration::from_millis(1)), 1);
        assert_eq!(secs_up(Duration::from_millis(1001)), 2);
        assert_eq!(secs_up(Duration::from_secs(3)), 3);
        assert_eq!(secs_up(Duration::MAX), u64::MAX);
    }
}
