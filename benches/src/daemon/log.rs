//! The daemon's JSON log (`epcheck run --log-format json`): one object per line with an RFC
//! 3339 UTC `timestamp` and the event's `fields`; and the [`Clock`] that puts this process's
//! `Instant`s on the log's wall clock.

use std::path::Path;
use std::time::{Instant, SystemTime};

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

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as tracing-subscriber writes it).
pub fn rfc3339(s: &str) -> Option<SystemTime> {
    s.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// The last `n` lines of the file at `path` (empty when it cannot be read), for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Maps this process's `Instant`s to wall-clock time (the daemon's log has wall-clock stamps).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    /// The mapping taken now.
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.wall + (at - self.instant)
        } else {
            self.wall - (self.instant - at)
        }
    }
}

/// Signed difference `b - a` in seconds.
pub fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

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
