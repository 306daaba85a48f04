//! Multi-vantage consensus (SPEC §9.1): a backend leaves a Service only when most replicas see
//! it down, so a leader that lost its own path to part of the backends does not remove what the
//! rest of the cluster still reaches.
//!
//! ```text
//!  replica A ──publish View──┐                         ┌── leader reads every view
//!  replica B ──publish View──┼─► board (Leases/Redis) ─┤   (read_interval), counts the
//!  replica C ──publish View──┘    one object per view  └── fresh ones per target: Tally
//! ```
//!
//! * A [`View`] is one replica's verdicts: the down targets of every service it probes, or an
//!   abstention (its own fail-safe holds, or it is still starting). It is published when it
//!   changes and refreshed every `heartbeat`, so the steady state costs one write per replica
//!   per heartbeat.
//! * A [`ViewBoard`] stores the views: [`LeaseBoard`] puts each in a Lease of its own (as
//!   node heartbeats do), or `ExpiringBoard` over a Redis key with a TTL or an etcd key bound
//!   to an etcd lease. No gossip between replicas.
//! * A view is fresh while it keeps changing within `ttl` — for a Lease, on the *reader's*
//!   clock, counted from when it saw the Lease's `resourceVersion` change (never by comparing
//!   `renewTime` across clocks); for Redis, by the key's TTL on Redis's clock.
//! * [`Tally`] decides one target from the fresh views: removed when `quorum` see it down,
//!   restored when `quorum` see it up, held as last written otherwise. The default quorum is a
//!   majority of the fresh views, so a single replica decides alone, exactly as without
//!   consensus.

mod agent;
mod board;
mod tally;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use agent::{Agent, Views};
#[cfg(any(feature = "redis", feature = "etcd"))]
pub use board::{ExpiringBoard, ExpiringViews};
pub use board::{LeaseBoard, Posted, VIEW_ANNOTATION, VIEW_LABEL, ViewBoard, lease_name};
pub use tally::{Tally, Verdict};

use crate::error::Error;

/// Largest encoded view: 10,000 targets with 10 % down (1,000 IPv6 addresses) take under
/// 50 KiB, and a Lease's annotations may hold 256 KiB.
pub const MAX_VIEW_BYTES: usize = 128 * 1024;

/// The wire format's version.
const VIEW_VERSION: u32 = 1;

/// The consensus settings (`consensus` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusSettings {
    /// How many fresh views must agree; `None`: a majority of the fresh views.
    pub quorum: Option<usize>,
    /// How often an unchanged view is published again.
    pub heartbeat: Duration,
    /// How long a view counts after it last changed.
    pub ttl: Duration,
    /// How often the leader reads the views.
    pub read_interval: Duration,
}

impl Default for ConsensusSettings {
    /// A majority, a heartbeat every 10 s, views fresh for 30 s, read every second.
    fn default() -> Self {
        ConsensusSettings {
            quorum: None,
            heartbeat: Duration::from_secs(10),
            ttl: Duration::from_secs(30),
            read_interval: Duration::from_secs(1),
        }
    }
}

impl ConsensusSettings {
    /// Checks the relations the rules need.
    ///
    /// # Errors
    ///
    /// [`Error::ConsensusConfig`] naming the setting when `heartbeat` is under 100 ms, `ttl`
    /// is not above `heartbeat + read_interval`, `read_interval` is zero, or `quorum` is 0.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |problem: String| Err(Error::ConsensusConfig { problem });
        if self.quorum == Some(0) {
            return bad("consensus.quorum must be at least 1 (leave it out for a majority)".into());
        }
        if self.heartbeat < Duration::from_millis(100) {
            return bad(format!(
                "consensus.heartbeat ({} ms) must be at least 100 ms",
                self.heartbeat.as_millis()
            ));
        }
        if self.read_interval.is_zero() {
            return bad("consensus.read_interval must be above 0".into());
        }
        if self.ttl <= self.heartbeat + self.read_interval {
            return bad(format!(
                "consensus.ttl ({} ms) must be more than heartbeat + read_interval ({} ms), or \
                 every view would go stale between two heartbeats",
                self.ttl.as_millis(),
                (self.heartbeat + self.read_interval).as_millis()
            ));
        }
        Ok(())
    }
}

/// One replica's verdicts: the down targets (by address) of every service it probes, or an
/// abstention.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct View {
    /// The wire format's version (1).
    #[serde(rename = "v")]
    pub version: u32,
    /// The replica's election identity.
    pub replica: String,
    /// Why this replica does not vote (its fail-safe holds, it is starting); `None` when it
    /// votes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abstain: Option<String>,
    /// Every service it probes (key as in the config) and the addresses it sees down there.
    /// A service missing here gets no vote from this replica.
    #[serde(default)]
    pub down: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl View {
    /// An abstention by `replica` for `reason`.
    pub fn abstaining(replica: impl Into<String>, reason: impl Into<String>) -> Self {
        View {
            version: VIEW_VERSION,
            replica: replica.into(),
            abstain: Some(reason.into()),
            down: BTreeMap::new(),
        }
    }

    /// A vote by `replica`.
    pub fn voting(replica: impl Into<String>, down: BTreeMap<String, BTreeSet<IpAddr>>) -> Self {
        View {
            version: VIEW_VERSION,
            replica: replica.into(),
            abstain: None,
            down,
        }
    }

    /// How many targets it sees down, over all services.
    pub fn down_count(&self) -> usize {
        self.down.values().map(BTreeSet::len).sum()
    }

    /// The JSON text published. A view over [`MAX_VIEW_BYTES`] becomes an abstention that
    /// says so (a view that does not fit must not be cut: a missing address would be a vote
    /// for "up").
    pub fn encode(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= MAX_VIEW_BYTES && !text.is_empty() {
            return text;
        }
        let reason = format!(
            "view too large: {} targets down over {} services",
            self.down_count(),
            self.down.len()
        );
        serde_json::to_string(&View::abstaining(self.replica.clone(), reason)).unwrap_or_default()
    }

    /// Reads a published view, bounded before parsing.
    ///
    /// # Errors
    ///
    /// A description of what is wrong: too large, not JSON of this shape, another version.
    pub fn decode(text: &str) -> Result<View, String> {
        if text.len() > MAX_VIEW_BYTES {
            return Err(format!(
                "view of {} bytes is over the {MAX_VIEW_BYTES}-byte limit",
                text.len()
            ));
        }
        let view: View =
            serde_json::from_str(text).map_err(|e| format!("view is not valid: {e}"))?;
        if view.version != VIEW_VERSION {
            return Err(format!(
                "view has format version {}, this epcheck reads {VIEW_VERSION}",
                view.version
            ));
        }
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(ConsensusSettings::default().validate().is_ok());
        let mut s = ConsensusSettings {
            quorum: Some(0),
            ..ConsensusSettings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("quorum"));
        s.quorum = Some(2);
        s.ttl = Duration::from_secs(11);
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("consensus.ttl")
        );
        s.ttl = Duration::from_secs(12);
        assert!(s.validate().is_ok());
        s.heartbeat = Duration::from_millis(50);
        assert!(s.validate().unwrap_err().to_string().contains("heartbeat"));
    }

    #[test]
    fn a_view_round_trips_and_ten_thousand_targets_with_ten_percent_down_fit() {
        let mut down = BTreeMap::new();
        // 1,000 IPv6 addresses (the longest form) over 100 services.
        for s in 0..100u16 {
            let ips = (0..10u16)
                .map(|i| IpAddr::from([0x2001, 0xdb8, s, 0xffff, 0xffff, 0xffff, 0xffff, i]))
                .collect();
            down.insert(format!("service-with-a-long-name-{s:03}"), ips);
        }
        let view = View::voting("epcheck-7d9f8b6c5d-x2v4q_a1b2c3", down);
        let text = view.encode();
        // README: "10,000 targets with 10 % down fit in under 50 KiB".
        assert!(text.len() < 50 * 1024, "{} bytes", text.len());
        assert_eq!(View::decode(&text).unwrap(), view);
        assert_eq!(view.down_count(), 1000);
    }

    #[test]
    fn a_view_too_large_abstains_and_bad_input_is_refused() {
        let ips = (0..20_000u32)
            // Documentation addresses (2001:db8::/32); never contacted, only encoded.
            .map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16]))
            .collect();
        let view = View::voting("r", BTreeMap::from([("web".to_string(), ips)]));
        let back = View::decode(&view.encode()).unwrap();
        assert_eq!(
            back.abstain.as_deref(),
            Some("view too large: 20000 targets down over 1 services")
        );
        assert!(back.down.is_empty());
        assert!(View::decode("{").unwrap_err().contains("not valid"));
        assert!(
            View::decode(&"x".repeat(MAX_VIEW_BYTES + 1))
                .unwrap_err()
                .contains("limit")
        );
        let v2 = r#"{"v":2,"replica":"r","down":{}}"#;
        assert!(View::decode(v2).unwrap_err().contains("version 2"));
        let bad_ip = r#"{"v":1,"replica":"r","down":{"web":["198.51.100.300"]}}"#;
        assert!(View::decode(bad_ip).is_err());
    }
}
