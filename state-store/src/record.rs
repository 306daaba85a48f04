//! The records a store keeps: one per target, one per service for the last write, and the
//! transition events.
//!
//! Records cross processes (a restarted daemon, a second replica, `epcheck status`), so:
//! - times are wall-clock unix milliseconds (`u64`), never `Instant`s;
//! - each record carries a `schema` version ([`SCHEMA_VERSION`]);
//! - every field added after version 1 must be `#[serde(default)]`, so a later epcheck reads an
//!   older record; unknown fields are ignored, so an older epcheck reads a newer record
//!   best-effort;
//! - a record that does not parse at all is skipped with a warning by [`decode`], never a panic.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The schema version this build writes. Bump it when a field changes meaning; adding a
/// defaulted field does not need a bump.
pub const SCHEMA_VERSION: u32 = 1;

fn schema_v1() -> u32 {
    1
}

/// The health of one target as stored. Mirrors `probe_core::Health` without depending on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passing.
    Up,
    /// Failing.
    Down,
    /// Not probed yet. Also what a state written by a newer epcheck reads as when this build
    /// does not know it.
    #[default]
    #[serde(other)]
    Unknown,
}

impl Health {
    /// `unknown`, `up` or `down`, as stored and as used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The stored state of one target (one field of the service's targets hash in Redis).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Schema version of the writer ([`SCHEMA_VERSION`]).
    #[serde(default = "schema_v1")]
    pub schema: u32,
    /// The service key (`service_healthcheck_list.<service>`). Filled from the storage key when
    /// a record lacks it.
    #[serde(default)]
    pub service: String,
    /// The target's name, unique within its service.
    pub name: String,
    /// The target's address.
    pub ip: IpAddr,
    /// The health-check port.
    #[serde(default)]
    pub port: u16,
    /// The current state.
    pub state: Health,
    /// When `state` was entered, unix ms.
    #[serde(default)]
    pub since: u64,
    /// When the last probe finished, unix ms; `None` before the first probe.
    #[serde(default)]
    pub last_probe_at: Option<u64>,
    /// The last probe's error, `None` when it passed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Consecutive passing probes (for rise).
    #[serde(default)]
    pub consecutive_successes: u32,
    /// Consecutive failing probes (for fall).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When this record was written, unix ms (used to decide whether it is fresh enough to
    /// restore).
    #[serde(default)]
    pub updated_at: u64,
}

impl TargetRecord {
    /// A record for a target that has not been probed yet, stamped now.
    pub fn new(service: impl Into<String>, name: impl Into<String>, ip: IpAddr, port: u16) -> Self {
        let now = now_ms();
        TargetRecord {
            schema: SCHEMA_VERSION,
            service: service.into(),
            name: name.into(),
            ip,
            port,
            state: Health::Unknown,
            since: now,
            last_probe_at: None,
            last_error: None,
            consecutive_successes: 0,
            consecutive_failures: 0,
            updated_at: now,
        }
    }

    /// How old the record is at `now` (unix ms); zero if it claims to be from the future
    /// (clocks of two hosts differ).
    pub fn age_at(&self, now: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(self.updated_at))
    }
}

/// The addresses last written to a service's Endpoints object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// Schema version of the writer ([`SCHEMA_VERSION`]).
    #[serde(default = "schema_v1")]
    pub schema: u32,
    /// Ready addresses (`subsets[].addresses`), sorted.
    #[serde(default)]
    pub ready: Vec<String>,
    /// Not-ready addresses (`subsets[].notReadyAddresses`), sorted.
    #[serde(default)]
    pub not_ready: Vec<String>,
    /// The `resourceVersion` the ApiServer returned for the write, when known.
    #[serde(default)]
    pub resource_version: Option<String>,
    /// When the write happened, unix ms.
    #[serde(default)]
    pub applied_at: u64,
}

/// One health transition of one target (an entry of the capped events stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionEvent {
    /// Schema version of the writer ([`SCHEMA_VERSION`]).
    #[serde(default = "schema_v1")]
    pub schema: u32,
    /// The service key.
    pub service: String,
    /// The target's name.
    pub target: String,
    /// The target's address.
    pub ip: IpAddr,
    /// The state before.
    pub from: Health,
    /// The state after.
    pub to: Health,
    /// When it happened, unix ms.
    #[serde(default)]
    pub at: u64,
    /// The probe error that caused it (for a transition to `down`).
    #[serde(default)]
    pub error: Option<String>,
}

/// Unix milliseconds of a wall-clock time (0 before 1970, saturating far in the future).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The wall-clock time of unix milliseconds.
pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(record: &T, what: &'static str) -> crate::Result<String> {
    serde_json::to_string(record).map_err(|source| crate::Error::Encode { what, source })
}

/// The target records of `service` from what a store holds, as (where, for messages; the
/// text, `None` when it is not text): the ones that parse, with an empty service filled in,
/// sorted by name.
#[cfg(any(feature = "redis", feature = "etcd"))]
pub(crate) fn target_records(
    service: &str,
    stored: impl IntoIterator<Item = (String, Option<String>)>,
) -> Vec<TargetRecord> {
    let mut records: Vec<TargetRecord> = stored
        .into_iter()
        .filter_map(|(key, raw)| {
            let Some(raw) = raw else {
                tracing::warn!(key = %key, "skipping a stored target that is not text");
                return None;
            };
            let mut record: TargetRecord = decode(&raw, &key)?;
            if record.service.is_empty() {
                record.service = service.to_owned();
            }
            Some(record)
        })
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

/// Decodes a stored record, or logs a warning naming `key` and returns `None` when it does not
/// parse. A record with a newer schema than this build knows is read best-effort (and logged
/// at debug level).
pub fn decode<T: DeserializeOwned>(raw: &str, key: &str) -> Option<T> {
    match serde_json::from_str::<T>(raw) {
        Ok(record) => {
            if let Some(schema) = schema_of(raw).filter(|s| *s > SCHEMA_VERSION) {
                tracing::debug!(
                    key,
                    schema,
                    known = SCHEMA_VERSION,
                    "read a record from a newer epcheck"
                );
            }
            Some(record)
        }
        Err(error) => {
            tracing::warn!(key, %error, "skipping a stored record that does not parse");
            None
        }
    }
}

fn schema_of(raw: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct Schema {
        schema: u32,
    }
    serde_json::from_str::<Schema>(raw).ok().map(|s| s.schema)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sample() -> TargetRecord {
        TargetRecord {
            schema: SCHEMA_VERSION,
            service: "redis".into(),
            name: "node-01".into(),
            ip: "198.51.100.10".parse().unwrap(),
            port: 38080,
            state: Health::Down,
            since: 1_700_000_000_000,
            last_probe_at: Some(1_700_000_001_000),
            last_error: Some("connection refused".into()),
            consecutive_successes: 0,
            consecutive_failures: 3,
            updated_at: 1_700_000_001_000,
        }
    }

    #[test]
    fn target_record_round_trips() {
        let record = sample();
        let json = encode(&record, "target").unwrap();
        assert!(json.contains(r#""state":"down""#), "{json}");
        assert_eq!(decode::<TargetRecord>(&json, "k"), Some(record));
    }

    #[test]
    fn ipv6_and_other_records_round_trip() {
        let event = TransitionEvent {
            schema: SCHEMA_VERSION,
            service: "emqx".into(),
            target: "n2".into(),
            ip: "2001:db8::2".parse().unwrap(),
            from: Health::Up,
            to: Health::Down,
            at: 5,
            error: Some("timeout".into()),
        };
        let json = encode(&event, "event").unwrap();
        assert_eq!(decode::<TransitionEvent>(&json, "k"), Some(event));

        let applied = AppliedRecord {
            schema: SCHEMA_VERSION,
            ready: vec!["198.51.100.10".into()],
            not_ready: vec!["198.51.100.11".into()],
            resource_version: Some("42".into()),
            applied_at: 7,
        };
        let json = encode(&applied, "applied").unwrap();
        assert_eq!(decode::<AppliedRecord>(&json, "k"), Some(applied));
    }

    #[test]
    fn old_minimal_record_reads_with_defaults() {
        // What the first writer of the format could have stored: no schema, no counters.
        let raw = r#"{"name":"node-01","ip":"198.51.100.10","state":"up"}"#;
        let record: TargetRecord = decode(raw, "k").unwrap();
        assert_eq!(record.schema, 1);
        assert_eq!(record.state, Health::Up);
        assert_eq!(record.service, "");
        assert_eq!(record.last_probe_at, None);
        assert_eq!(record.consecutive_failures, 0);

        let applied: AppliedRecord = decode(r#"{"ready":["198.51.100.10"]}"#, "k").unwrap();
        assert_eq!(applied.not_ready, Vec::<String>::new());
        assert_eq!(applied.resource_version, None);
    }

    #[test]
    fn newer_schema_is_read_best_effort() {
        let raw = r#"{"schema":7,"name":"n","ip":"198.51.100.10","state":"draining",
                      "weight":3,"port":80,"labels":{"zone":"a"}}"#;
        let record: TargetRecord = decode(raw, "k").unwrap();
        assert_eq!(record.schema, 7);
        assert_eq!(
            record.state,
            Health::Unknown,
            "an unknown state reads as unknown"
        );
        assert_eq!(record.port, 80);
    }

    #[test]
    fn garbage_is_skipped_not_a_panic() {
        for raw in [
            "",
            "not json",
            "{",
            "[]",
            "null",
            r#"{"name":"n"}"#,
            r#"{"name":"n","ip":"not-an-ip","state":"up"}"#,
            r#"{"name":"n","ip":"198.51.100.10","state":"up","port":70000}"#,
        ] {
            assert_eq!(decode::<TargetRecord>(raw, "k"), None, "{raw:?}");
        }
    }

    #[test]
    fn times_are_unix_ms() {
        let t = from_unix_ms(1_700_000_000_123);
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        let record = TargetRecord::new("s", "n", "198.51.100.1".parse().unwrap(), 80);
        assert!(record.updated_at > 1_600_000_000_000);
        assert_eq!(
            record.age_at(record.updated_at + 1500),
            Duration::from_millis(1500)
        );
        assert_eq!(record.age_at(0), Duration::ZERO);
        assert_eq!(Health::Down.to_string(), "down");
    }
}
