//! Wall-clock times as RFC 3339 text, the one format epcheck shows them in (`/status`, webhook
//! events, notify scripts).
//!
//! The calendar is jiff's, as for the Lease's `MicroTime` in `k8s-endpoints`: the workspace has no
//! date arithmetic of its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Span;
use jiff::civil::DateTime;

/// The last instant RFC 3339 can write with a four-digit year (9999-12-31T23:59:59).
const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// `t` as RFC 3339 in UTC with milliseconds (`2026-01-02T03:04:05.123Z`). Times before 1970
/// show as the epoch, times after 9999 as the last second of 9999.
pub fn rfc3339(t: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::from_secs(MAX_RFC3339_SECS);
    let since = t
        .clamp(UNIX_EPOCH, max)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Civil time in UTC rather than a jiff `Timestamp`, whose range stops a day short of
    // 9999-12-31T23:59:59. Once clamped, always in range; the fallback is never taken.
    let epoch = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    let t = i64::try_from(since.as_millis())
        .ok()
        .and_then(|ms| Span::new().try_milliseconds(ms).ok())
        .and_then(|span| epoch.checked_add(span).ok())
        .unwrap_or(epoch);
    // A precision of 3 always writes three digits.
    format!("{t:.3}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 7)), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339(at(1_767_323_045, 123)), "2026-01-02T03:04:05.123Z");
        assert_eq!(rfc3339(at(4_107_542_399, 999)), "2100-02-28T23:59:59.999Z");
        // Truncated, not rounded, to milliseconds.
        let t = UNIX_EPOCH + Duration::new(1_767_323_045, 123_999_999);
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05.123Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_micros(999)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn out_of_range_times_are_clamped_not_a_panic() {
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 1000)),
            "9999-12-31T23:59:59.000Z"
        );
    }
}
