//! The daemon's JSON log (`epcheck run --log-format json`): one object per line with an RFC
//! 3339 UTC `timestamp` and the event's `fields`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One log event.
#[derive(Clone, Debug)]
pub struct LogEvent {
    /// When it was logged (the daemon's wall clock).
    pub at: SystemTime,
    /// `fields.message`.
    pub message: String,
    /// Every field.
    pub fields: Value,
}

impl LogEvent {
    /// A string field.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_str()
    }
}

/// Every parsable event of a JSON log.
pub fn parse(log: &str) -> Vec<LogEvent> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let at = rfc3339(v.get("timestamp")?.as_str()?)?;
            let fields = v.get("fields")?.clone();
            let message = fields.get("message")?.as_str()?.to_owned();
            Some(LogEvent {
                at,
                message,
                fields,
            })
        })
        .collect()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, as tracing-subscriber writes it).
pub fn rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    let secs = days_from_civil(y, m, day) * 86_400 + hh * 3_600 + mm * 60 + ss;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_timestamps_and_events() {
        let t = rfc3339("2025-11-22T03:53:01.250000Z").unwrap();
        let since = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(since, Duration::from_millis(1_763_783_581_250));
        let line = r#"{"timestamp":"2025-11-22T03:53:01.250000Z","level":"WARN","fields":{"message":"target down","service":"s0001","addr":"127.10.1.1:4000"},"target":"epcheck"}"#;
        let events = parse(&format!("{line}\nnot json\n"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "target down");
        assert_eq!(events[0].field("service"), Some("s0001"));
    }
}
