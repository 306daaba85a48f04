//! What a lock stores, independent of where it is stored, and the [`Lock`] seam.

use std::fmt;
use std::future::Future;

use super::MicroTime;
use crate::client::LeaseSpec;
use crate::error::Error;

/// The leader-election record, as client-go's `LeaderElectionRecord`: the part of a Lease's
/// spec the election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaderRecord {
    /// Who holds the lock; empty when nobody does.
    pub holder_identity: String,
    /// How long candidates wait after last seeing the record change, in seconds.
    pub lease_duration_seconds: i32,
    /// When the holder acquired it.
    pub acquire_time: Option<MicroTime>,
    /// When the holder last renewed it.
    pub renew_time: Option<MicroTime>,
    /// How many times the lock changed holders.
    pub lease_transitions: i32,
}

impl LeaderRecord {
    /// The holder, `None` when the record names nobody.
    pub fn holder(&self) -> Option<&str> {
        Some(self.holder_identity.as_str()).filter(|h| !h.is_empty())
    }

    /// The record a Lease spec carries (absent fields read as empty and zero). The holder is
    /// shown in logs and `/status`, so its control characters are escaped
    /// ([`escape_control`](crate::escape_control)); an identity epcheck writes has none, so
    /// its own record reads back unchanged.
    pub fn from_spec(spec: &LeaseSpec) -> Self {
        Self {
            holder_identity: spec
                .holder_identity
                .as_deref()
                .map(|h| crate::escape_control(h).into_owned())
                .unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time,
            renew_time: spec.renew_time,
            lease_transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// Writes the record into a Lease spec, leaving the spec's other fields alone. The
    /// holder is always written, as `""` after a release.
    pub fn apply_to(&self, spec: &mut LeaseSpec) {
        spec.holder_identity = Some(self.holder_identity.clone());
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.acquire_time = self.acquire_time;
        spec.renew_time = self.renew_time;
        spec.lease_transitions = Some(self.lease_transitions);
    }
}

/// The version of a stored record that a conditional write must name (a Lease's
/// `resourceVersion`). Opaque: only compared for equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Version(pub String);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the leader record lives, as client-go's `resourcelock.Interface`.
///
/// [`update`](Lock::update) must be conditional: it succeeds only if the stored record still
/// has `version`, so that of two candidates that read the same record only one wins. Every
/// error means "not written" as far as the caller knows — the election never treats a failed
/// or timed-out write as a success.
///
/// Methods return `Send` futures so an elector can be spawned; an implementation may write
/// them as `async fn`.
pub trait Lock: Send + Sync {
    /// Reads the record and its version; `None` when the lock does not exist yet.
    fn get(&self) -> impl Future<Output = Result<Option<(LeaderRecord, Version)>, Error>> + Send;

    /// Creates the lock holding `record`; fails if it exists already.
    fn create(&self, record: &LeaderRecord) -> impl Future<Output = Result<Version, Error>> + Send;

    /// Replaces the record if its version is still `version`; returns the new version.
    fn update(
        &self,
        record: &LeaderRecord,
        version: &Version,
    ) -> impl Future<Output = Result<Version, Error>> + Send;

    /// This candidate's identity, written as the holder.
    fn identity(&self) -> &str;

    /// The lock for messages (`Lease default/epcheck`).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn spec_round_trip_keeps_other_fields() {
        let mut spec = LeaseSpec::default();
        spec.extra.insert("strategy".into(), "x".into());
        let record = LeaderRecord {
            holder_identity: "a".into(),
            lease_duration_seconds: 15,
            acquire_time: Some(MicroTime::now()),
            renew_time: Some(MicroTime::now()),
            lease_transitions: 4,
        };
        record.apply_to(&mut spec);
        assert_eq!(LeaderRecord::from_spec(&spec), record);
        assert_eq!(spec.extra["strategy"], "x");
        assert_eq!(record.holder(), Some("a"));
        let released = LeaderRecord::default();
        released.apply_to(&mut spec);
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(LeaderRecord::from_spec(&spec).holder(), None);
        assert_eq!(
            LeaderRecord::from_spec(&LeaseSpec::default()),
            LeaderRecord::default()
        );
    }
}
