//! The daemon's state as a document (epcheck serves it as `/status`), published to
//! [`Observer::status`](super::Observer::status).
//!
//! # Schema
//!
//! Every key is always present (`null` when there is no value); times are RFC 3339 in UTC with
//! milliseconds; `state` is `unknown`, `up` or `down`.
//!
//! ```json
//! {
//!   "identity": "epcheck-6d5f8-x7k2q",
//!   "leader": "epcheck-6d5f8-x7k2q",
//!   "is_leader": true,
//!   "failsafe_active": false,
//!   "consensus": null,
//!   "services": [{
//!     "service": "redis", "namespace": "default", "name": "redis",
//!     "ready": 1, "configured": 2,
//!     "last_reconcile": "2026-01-02T03:04:05.123Z", "error": null,
//!     "targets": [{
//!       "name": "node-01", "ip": "198.51.100.10", "port": 38080, "state": "up",
//!       "since": "2026-01-02T02:00:00.000Z", "last_probe": "2026-01-02T03:04:05.001Z",
//!       "last_error": null, "views": null
//!     }]
//!   }]
//! }
//! ```

use std::net::IpAddr;
use std::time::SystemTime;

use probe_core::Health;
use serde::{Serialize, Serializer};

use crate::time::rfc3339;

/// The whole `/status` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusSnapshot {
    /// This replica's leader-election identity (`None` when leader election is off).
    pub identity: Option<String>,
    /// The identity of the replica that holds the lease, as last seen (`None` when leader
    /// election is off or nobody holds it).
    pub leader: Option<String>,
    /// Whether this replica writes (always `true` without leader election).
    pub is_leader: bool,
    /// Whether the fail-safe holds every write (SPEC §5.4).
    pub failsafe_active: bool,
    /// Multi-vantage consensus (SPEC §9.1); `None` when it is off.
    pub consensus: Option<ConsensusStatus>,
    /// Every configured service, in config order.
    pub services: Vec<ServiceStatus>,
}

/// The views that count, as this replica knows them (the leader reads every view; a follower
/// knows only its own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConsensusStatus {
    /// `consensus.quorum`; `None` for a majority of the fresh views.
    pub quorum: Option<usize>,
    /// The replicas whose views count, this one first.
    pub fresh: Vec<String>,
    /// Fresh views that abstain, as `replica: why`.
    pub abstaining: Vec<String>,
    /// Views that do not count, as `replica: why`.
    pub stale: Vec<String>,
    /// Why every target holds its last written state now, if it does.
    pub holding: Option<String>,
}

/// Which replicas see a target up, down, or abstain (this replica included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TargetViews {
    /// Replicas that see it up.
    pub up: Vec<String>,
    /// Replicas that see it down.
    pub down: Vec<String>,
    /// Replicas that abstain.
    pub abstain: Vec<String>,
}

/// One service in [`StatusSnapshot`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// The service key of the config.
    pub service: String,
    /// The Endpoints object's namespace.
    pub namespace: String,
    /// The Endpoints object's name.
    pub name: String,
    /// Targets that are up.
    pub ready: usize,
    /// Targets configured.
    pub configured: usize,
    /// When the service was last reconciled successfully.
    #[serde(serialize_with = "opt_rfc3339")]
    pub last_reconcile: Option<SystemTime>,
    /// Why the last reconcile failed, `None` after a success.
    pub error: Option<String>,
    /// The service's targets, in config order.
    pub targets: Vec<TargetStatus>,
}

/// One target in [`ServiceStatus`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetStatus {
    /// The target's name.
    pub name: String,
    /// Its address.
    pub ip: IpAddr,
    /// Its health-check port.
    pub port: u16,
    /// Its health.
    pub state: Health,
    /// When it entered `state`.
    #[serde(serialize_with = "opt_rfc3339")]
    pub since: Option<SystemTime>,
    /// The last failing probe's error, `None` when the last probe passed.
    pub last_error: Option<String>,
    /// When the last probe finished.
    #[serde(serialize_with = "opt_rfc3339")]
    pub last_probe: Option<SystemTime>,
    /// With consensus, on the leader: which replicas see it up or down.
    pub views: Option<TargetViews>,
}

fn opt_rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn snapshot_serializes_with_every_key() {
        let snap = StatusSnapshot {
            identity: None,
            leader: None,
            is_leader: true,
            failsafe_active: false,
            consensus: None,
            services: vec![ServiceStatus {
                service: "redis".into(),
                namespace: "default".into(),
                name: "redis".into(),
                ready: 0,
                configured: 1,
                last_reconcile: None,
                error: Some("403 Forbidden".into()),
                targets: vec![TargetStatus {
                    name: "node-01".into(),
                    ip: IpAddr::from([198, 51, 100, 10]),
                    port: 38080,
                    state: Health::Down,
                    since: Some(UNIX_EPOCH),
                    last_error: Some("connection refused".into()),
                    last_probe: None,
                    views: None,
                }],
            }],
        };
        let v = serde_json::to_value(&snap).unwrap_or_default();
        assert_eq!(v["leader"], serde_json::Value::Null);
        assert_eq!(v["services"][0]["error"], "403 Forbidden");
        let t = &v["services"][0]["targets"][0];
        assert_eq!(t["state"], "down");
        assert_eq!(t["ip"], "198.51.100.10");
        assert_eq!(t["since"], "1970-01-01T00:00:00.000Z");
        assert_eq!(t["last_probe"], serde_json::Value::Null);
    }
}
