//! An entry's `time`: RFC 3339 in UTC with the nanoseconds, trailing zeros
//! cut (what `time`'s `Rfc3339` writes, and Go's `RFC3339Nano` in Vault).
//!
//! Made twice per audited request: the date and time of day are formatted
//! by `time` once per second per thread and kept; only the fraction is
//! written per entry, on the stack (formatting the whole stamp with
//! `core::fmt` and a `String` each time cost ~0.5 us per request).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (longer only past the year 9999).
const CAPACITY: usize = 48;

/// A formatted stamp, on the stack.
#[derive(Clone, Copy)]
pub struct Stamp {
    buf: [u8; CAPACITY],
    len: usize,
}

thread_local! {
    /// (Unix second, its stamp without the `Z`).
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

impl Stamp {
    /// Now.
    pub fn now() -> Stamp {
        let (secs, nanos) = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (i64::try_from(d.as_secs()).unwrap_or(i64::MAX), d.subsec_nanos()),
            // A clock before 1970: the epoch rather than a panic.
            Err(_) => (0, 0),
        };
        Self::at(secs, nanos)
    }

    /// The stamp of `secs` (Unix time) and `nanos` (below 1e9).
    fn at(secs: i64, nanos: u32) -> Stamp {
        let mut s = Stamp { buf: [0; CAPACITY], len: 0 };
        SECOND.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                *c = (secs, whole_second(secs));
            }
            s.push(c.1.as_bytes());
        });
        if nanos != 0 {
            let mut digits = [b'0'; 10];
            digits[0] = b'.';
            let mut n = nanos;
            for d in digits[1..].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            let keep = 10 - digits[1..].iter().rev().take_while(|d| **d == b'0').count();
            s.push(&digits[..keep]);
        }
        s.push(b"Z");
        s
    }

    fn push(&mut self, b: &[u8]) {
        let end = (self.len + b.len()).min(CAPACITY);
        self.buf[self.len..end].copy_from_slice(&b[..end - self.len]);
        self.len = end;
    }

    pub fn as_str(&self) -> &str {
        // ASCII: digits and separators from `time`, digits here.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second (UTC), by `time`.
fn whole_second(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = t.format(&Rfc3339).unwrap_or_default();
    // A whole second is written without a fraction: only the `Z` to cut.
    s.pop();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_time(secs: i64, nanos: u32) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap().replace_nanosecond(nanos).unwrap();
        t.format(&Rfc3339).unwrap()
    }

    #[test]
    fn the_same_as_time_writes() {
        let seconds = [0, 1, 59, 86_399, 951_782_400, 1_764_763_811, 4_102_444_799, 253_402_300_799];
        let fractions = [0, 1, 10, 100_000_000, 120_000_000, 897_979_386, 999_999_999, 500, 1_000_000];
        for secs in seconds {
            for nanos in fractions {
                assert_eq!(Stamp::at(secs, nanos).as_str(), by_time(secs, nanos), "{secs} {nanos}");
            }
        }
        // Second changes on one thread reformat the cached part.
        for secs in (1_764_763_800..1_764_763_900).chain([5, 1_764_763_850]) {
            assert_eq!(Stamp::at(secs, 7).as_str(), by_time(secs, 7));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_instant(secs in 0i64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            let s = Stamp::at(secs, nanos);
            proptest::prop_assert_eq!(s.as_str(), by_time(secs, nanos));
        }
    }

    #[test]
    fn now_is_a_stamp_of_now() {
        let s = Stamp::now();
        let parsed = time::OffsetDateTime::parse(s.as_str(), &Rfc3339).unwrap();
        assert!((time::OffsetDateTime::now_utc() - parsed).whole_seconds().abs() < 5, "{}", s.as_str());
    }
}
