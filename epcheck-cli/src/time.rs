//! Wall-clock times as RFC 3339 text, the one format epcheck shows them in (`/status`, webhook
//! events, notify scripts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant RFC 3339 can write with a four-digit year (9999-12-31T23:59:59).
const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// `t` as RFC 3339 in UTC with milliseconds (`2026-01-02T03:04:05.123Z`). Times before 1970
/// show as the epoch, times after 9999 as the last second of 9999.
pub fn rfc3339(t: SystemTime) -> String {
    let max = UNIX_EPOCH + Duration::from_secs(MAX_RFC3339_SECS);
    let t = t.clamp(UNIX_EPOCH, max);
    humantime::format_rfc3339_millis(t).to_string()
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
