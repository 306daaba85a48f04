//! `metav1.MicroTime`: the timestamps of a Lease (`acquireTime`, `renewTime`).
//!
//! Written as RFC 3339 in UTC with exactly six fractional digits
//! (`2026-01-02T03:04:05.123456Z`), which is the only form the ApiServer's decoder accepts
//! for these fields; read leniently, as Go's `time.RFC3339Nano` parser does: zero to nine
//! fractional digits, `Z` or a `±hh:mm` offset, `T`/`t` and `Z`/`z` in either case.
//!
//! The text's shape is checked here, strictly (Go's shapes and no others); the calendar (valid
//! dates, days since the epoch, printing) is jiff's, the workspace's one date library. These
//! values are only ever *shown* and *sent*: the election never compares them across hosts
//! (SPEC §9), it measures expiry on the local monotonic clock.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Span;
use jiff::civil::{Date, DateTime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with microsecond precision, as a Lease carries it.
///
/// ```
/// use k8s_endpoints::election::MicroTime;
///
/// let t: MicroTime = "2026-01-02T03:04:05.1234567Z".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-01-02T03:04:05.123456Z");
/// let t: MicroTime = "2026-01-02T05:04:05+02:00".parse().unwrap();
/// assert_eq!(t.to_string(), "2026-01-02T03:04:05.000000Z");
/// assert!("yesterday".parse::<MicroTime>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroTime {
    /// Seconds since the Unix epoch (negative before 1970).
    secs: i64,
    /// Microseconds within the second, `0..1_000_000`.
    micros: u32,
}

/// Why a text is not a `MicroTime`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 time {text:?}: {problem}")]
pub struct MicroTimeError {
    /// The text (cut to 64 characters).
    pub text: String,
    /// What is wrong.
    pub problem: &'static str,
}

/// Seconds of 0001-01-01 and 9999-12-31T23:59:59 relative to the epoch: the years RFC 3339
/// can write with four digits.
const MIN_SECS: i64 = -62_135_596_800;
const MAX_SECS: i64 = 253_402_300_799;

/// 1970-01-01T00:00:00 in UTC.
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);

impl MicroTime {
    /// The current wall-clock time, truncated to microseconds.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// `t` truncated to microseconds (clamped to years 1 to 9999).
    pub fn from_system_time(t: SystemTime) -> Self {
        let (secs, micros) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(MAX_SECS),
                d.subsec_micros(),
            ),
            Err(e) => {
                let d = e.duration();
                let whole = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_micros() {
                    0 => (whole.saturating_neg(), 0),
                    us => (whole.saturating_neg().saturating_sub(1), 1_000_000 - us),
                }
            }
        };
        Self::clamped(secs, micros)
    }

    /// The same instant as a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        let sub = Duration::from_micros(u64::from(self.micros));
        let whole = Duration::from_secs(self.secs.unsigned_abs());
        if self.secs >= 0 {
            UNIX_EPOCH + whole + sub
        } else {
            UNIX_EPOCH - whole + sub
        }
    }

    /// Seconds since the Unix epoch and the microseconds within that second.
    pub fn unix(self) -> (i64, u32) {
        (self.secs, self.micros)
    }

    fn clamped(secs: i64, micros: u32) -> Self {
        if secs < MIN_SECS {
            Self {
                secs: MIN_SECS,
                micros: 0,
            }
        } else if secs > MAX_SECS {
            Self {
                secs: MAX_SECS,
                micros: 999_999,
            }
        } else {
            Self { secs, micros }
        }
    }

    /// Parses RFC 3339 leniently (see the module docs).
    ///
    /// # Errors
    ///
    /// [`MicroTimeError`] for anything that is not an RFC 3339 date-time.
    pub fn parse(text: &str) -> Result<Self, MicroTimeError> {
        let fail = |problem| MicroTimeError {
            text: text.chars().take(64).collect(),
            problem,
        };
        let b = text.as_bytes();
        if b.len() < 20 || !b.is_ascii() {
            return Err(fail("expected YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)"));
        }
        let num = |from: usize, len: usize| -> Option<i64> {
            let part = b.get(from..from + len)?;
            part.iter().try_fold(0i64, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
            })
        };
        let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
        if seps.iter().any(|&(i, c)| b[i] != c) || !matches!(b[10], b'T' | b't') {
            return Err(fail("expected YYYY-MM-DDThh:mm:ss"));
        }
        let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
            num(0, 4),
            num(5, 2),
            num(8, 2),
            num(11, 2),
            num(14, 2),
            num(17, 2),
        ) else {
            return Err(fail("expected digits in the date and time"));
        };
        let date = match (i16::try_from(year), i8::try_from(month), i8::try_from(day)) {
            (Ok(y), Ok(m), Ok(d)) => Date::new(y, m, d).map_err(|_| fail("no such date"))?,
            _ => return Err(fail("no such date")),
        };
        if hour > 23 || min > 59 || sec > 59 {
            return Err(fail("no such time of day"));
        }
        let mut i = 19;
        let mut micros = 0u32;
        if b[i] == b'.' {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 9 {
                return Err(fail("expected 1 to 9 fractional digits"));
            }
            for (k, c) in b[i + 1..i + 1 + digits].iter().enumerate() {
                if k < 6 {
                    micros = micros * 10 + u32::from(c - b'0');
                }
            }
            micros *= 10u32.pow(6u32.saturating_sub(u32::try_from(digits).unwrap_or(6)));
            i += 1 + digits;
        }
        let offset = match &b[i..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (Some(h), Some(m)) = (num(i + 1, 2), num(i + 4, 2)) else {
                    return Err(fail("expected a ±hh:mm offset"));
                };
                if h > 23 || m > 59 {
                    return Err(fail("offset out of range"));
                }
                let o = h * 3600 + m * 60;
                if *sign == b'-' { -o } else { o }
            }
            _ => return Err(fail("expected Z or a ±hh:mm offset after the time")),
        };
        let days = EPOCH
            .date()
            .until(date)
            .map_err(|_| fail("no such date"))?
            .get_days();
        let secs = i64::from(days) * 86_400 + hour * 3600 + min * 60 + sec;
        Ok(Self::clamped(secs - offset, micros))
    }
}

impl fmt::Display for MicroTime {
    /// `YYYY-MM-DDThh:mm:ss.ffffffZ`, always six fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Civil time in UTC rather than a jiff `Timestamp`, whose range stops a day short of
        // 9999-12-31T23:59:59 (so that it fits every offset). Years 1 to 9999 (the clamp in
        // every constructor) are always in `DateTime`'s range.
        // One unit: a span's units all carry the same sign, and `micros` counts forward from
        // `secs` also before the epoch.
        let span = self
            .secs
            .checked_mul(1_000_000)
            .and_then(|us| us.checked_add(i64::from(self.micros)))
            .and_then(|us| Span::new().try_microseconds(us).ok())
            .ok_or(fmt::Error)?;
        let t = EPOCH.checked_add(span).map_err(|_| fmt::Error)?;
        write!(f, "{t:.6}Z")
    }
}

impl FromStr for MicroTime {
    type Err = MicroTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MicroTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MicroTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn p(s: &str) -> MicroTime {
        MicroTime::parse(s).unwrap()
    }

    #[test]
    fn writes_exactly_six_digits() {
        assert_eq!(
            p("2026-01-02T03:04:05.123456Z").to_string(),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            MicroTime::from_system_time(UNIX_EPOCH).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        let t = UNIX_EPOCH + Duration::new(1_767_323_045, 7_000);
        assert_eq!(
            MicroTime::from_system_time(t).to_string(),
            "2026-01-02T03:04:05.000007Z"
        );
        let now = MicroTime::now().to_string();
        assert_eq!(now.len(), 27, "{now}");
        assert_eq!(now.split('.').nth(1).unwrap().len(), 7, "{now}");
    }

    #[test]
    fn reads_zero_to_nine_digits() {
        let base = p("2026-01-02T03:04:05Z");
        assert_eq!(base.unix(), (1_767_323_045, 0));
        assert_eq!(p("2026-01-02T03:04:05.1Z").unix().1, 100_000);
        assert_eq!(p("2026-01-02T03:04:05.123Z").unix().1, 123_000);
        assert_eq!(p("2026-01-02T03:04:05.123456789Z").unix().1, 123_456);
        assert_eq!(p("2026-01-02t03:04:05.5z").unix().1, 500_000);
        assert_eq!(p("2026-01-02T04:34:05+01:30"), base);
        assert_eq!(p("2026-01-01T22:04:05-05:00"), base);
    }

    #[test]
    fn round_trips() {
        for s in [
            "0001-01-01T00:00:00.000000Z",
            "1969-12-31T23:59:59.999999Z",
            "2000-02-29T12:00:00.000001Z",
            "2024-12-31T23:59:59.500000Z",
            "9999-12-31T23:59:59.999999Z",
        ] {
            let t = p(s);
            assert_eq!(t.to_string(), s);
            assert_eq!(MicroTime::from_system_time(t.to_system_time()), t, "{s}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<MicroTime>(&json).unwrap(), t);
        }
        // Every day over a few centuries prints as jiff's calendar says and reads back.
        for days in (-200_000i64..200_000).step_by(97) {
            let t = MicroTime::clamped(days * 86_400 + 3_723, 42);
            let text = t.to_string();
            let date = EPOCH
                .date()
                .checked_add(jiff::Span::new().days(days))
                .unwrap();
            assert_eq!(text, format!("{date}T01:02:03.000042Z"));
            assert_eq!(p(&text), t);
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for s in [
            "",
            "2026",
            "2026-01-02 03:04:05Z",
            "2026-01-02T03:04:05",
            "2026-13-02T03:04:05Z",
            "2026-02-30T03:04:05Z",
            "2025-02-29T03:04:05Z",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:60Z",
            "2026-01-02T03:04:05.Z",
            "2026-01-02T03:04:05.1234567890Z",
            "2026-01-02T03:04:05+1:00",
            "2026-01-02T03:04:05+24:00",
            "2026-01-02T03:04:05Zjunk",
            "２026-01-02T03:04:05Z",
            "-026-01-02T03:04:05Z",
        ] {
            let err = MicroTime::parse(s).unwrap_err();
            assert!(err.to_string().contains("invalid RFC 3339"), "{s}: {err}");
        }
        assert!(serde_json::from_str::<MicroTime>("12").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}", t in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.+Zz-]{8,20}") {
            let _ = MicroTime::parse(&s);
            if let Ok(m) = MicroTime::parse(&t) {
                proptest::prop_assert_eq!(MicroTime::parse(&m.to_string()), Ok(m));
            }
        }

        #[test]
        fn any_instant_round_trips(secs in MIN_SECS..=MAX_SECS, micros in 0u32..1_000_000) {
            let m = MicroTime { secs, micros };
            proptest::prop_assert_eq!(MicroTime::parse(&m.to_string()), Ok(m));
        }
    }

    #[test]
    fn before_the_epoch() {
        let t = UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(
            MicroTime::from_system_time(t).to_string(),
            "1969-12-31T23:59:59.999999Z"
        );
    }
}
