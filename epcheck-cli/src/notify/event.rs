//! What a notification is about: a target's or a service's health changed.
//!
//! # JSON schema (the `format: json` webhook body)
//!
//! A target transition:
//!
//! ```json
//! {"kind": "target", "service": "redis", "target": "node-02", "ip": "198.51.100.11",
//!  "port": 38080, "from": "up", "to": "down", "error": "connection refused",
//!  "at": "2025-01-02T03:04:05.678Z", "agreed": null}
//! ```
//!
//! - `from`/`to`: `"unknown"`, `"up"` or `"down"` (`from` is `"unknown"` for a target's first
//!   decided state); `error`: the last probe error, `null` when the target came up.
//! - `agreed`: with consensus (SPEC §9.1) the event is the leader's decision and this says how
//!   many replicas agreed (`"2/3 see it down"`, `error` is then `null`); `null` without.
//!
//! A service transition:
//!
//! ```json
//! {"kind": "service", "service": "redis", "from": "healthy", "to": "degraded",
//!  "ready": 2, "total": 3, "at": "2025-01-02T03:04:05.678Z"}
//! ```
//!
//! - `from`/`to`: `"healthy"` (every target ready), `"degraded"` (some), `"down"` (none); `from`
//!   is `null` for the first state the daemon reports.
//!
//! `at` is when the deciding probe result was seen, RFC 3339 in UTC with milliseconds. New keys
//! may be added; existing keys keep their meaning.

use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::SystemTime;

use probe_core::{Health, Target, Transition};
use serde::{Serialize, Serializer};

/// One notification: a target or a service changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifyEvent {
    /// A target went up or down.
    Target(TargetEvent),
    /// A service's [`ServiceHealth`] changed.
    Service(ServiceEvent),
}

/// A target transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetEvent {
    /// The service key.
    pub service: String,
    /// The target's name within its service.
    pub target: String,
    /// The target's address.
    pub ip: IpAddr,
    /// The health-check port.
    pub port: u16,
    /// The state before.
    pub from: Health,
    /// The new state.
    pub to: Health,
    /// The probe error that decided a `Down` (`None` for `Up`).
    pub error: Option<String>,
    /// When the deciding probe result was seen.
    #[serde(serialize_with = "serialize_time")]
    pub at: SystemTime,
    /// With consensus: how many replicas agreed (`2/3 see it down`); the event is then the
    /// leader's decision, not one replica's probe result.
    pub agreed: Option<String>,
}

impl TargetEvent {
    /// The event for `transition` of `target`. The transition's monotonic time is turned into
    /// wall-clock time by its age.
    pub fn new(target: &Target, transition: &Transition, error: Option<String>) -> Self {
        let age = transition.at.elapsed();
        Self {
            service: target.service.to_string(),
            target: target.name.to_string(),
            ip: target.ip,
            port: target.port,
            from: transition.from,
            to: transition.to,
            error,
            at: SystemTime::now()
                .checked_sub(age)
                .unwrap_or_else(SystemTime::now),
            agreed: None,
        }
    }

    /// The leader's consensus decision on `target`: written ready (`up`) or not, by the votes
    /// of `tally`.
    pub fn decided(target: &Target, up: bool, tally: &k8s_endpoints::consensus::Tally) -> Self {
        let (from, to) = if up {
            (Health::Down, Health::Up)
        } else {
            (Health::Up, Health::Down)
        };
        Self {
            service: target.service.to_string(),
            target: target.name.to_string(),
            ip: target.ip,
            port: target.port,
            from,
            to,
            error: None,
            at: SystemTime::now(),
            agreed: Some(tally.agreement()),
        }
    }
}

/// A service transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEvent {
    /// The service key.
    pub service: String,
    /// The state before; `None` for the first state reported.
    pub from: Option<ServiceHealth>,
    /// The new state.
    pub to: ServiceHealth,
    /// Ready targets.
    pub ready: usize,
    /// Configured targets.
    pub total: usize,
    /// When the change was seen.
    #[serde(serialize_with = "serialize_time")]
    pub at: SystemTime,
}

/// How much of a service is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceHealth {
    /// Every target is ready.
    Healthy,
    /// Some targets are ready, not all.
    Degraded,
    /// No target is ready (also: a service without targets).
    Down,
}

impl ServiceHealth {
    /// `healthy`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceHealth::Healthy => "healthy",
            ServiceHealth::Degraded => "degraded",
            ServiceHealth::Down => "down",
        }
    }
}

impl fmt::Display for ServiceHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The [`ServiceHealth`] of a service with `ready` of `total` targets ready.
pub fn service_state(ready: usize, total: usize) -> ServiceHealth {
    if ready == 0 {
        ServiceHealth::Down
    } else if ready >= total {
        ServiceHealth::Healthy
    } else {
        ServiceHealth::Degraded
    }
}

/// Whether a target transition is worth a notification: a change to `Up` or `Down`, except a
/// target's first decision being `Up` (a healthy start is not news; a target found down at start
/// is).
pub fn should_notify(transition: &Transition) -> bool {
    transition.from != transition.to
        && transition.to != Health::Unknown
        && !(transition.from == Health::Unknown && transition.to == Health::Up)
}

/// Remembers each service's last [`ServiceHealth`] and says when it changed.
///
/// The daemon calls [`observe`](Self::observe) after each reconcile of a service, once every
/// target of it has a decided health (before that, "0 ready" means "not probed yet", not
/// "down"), and sends the event it returns. A service's first observation is reported only
/// when it is not healthy. State restored from the store at start-up goes through
/// [`restore`](Self::restore), which never reports.
#[derive(Debug, Default, Clone)]
pub struct ServiceTracker {
    last: HashMap<String, ServiceHealth>,
}

impl ServiceTracker {
    /// A tracker that knows no service yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `service`'s state without an event (state restored at start-up).
    pub fn restore(&mut self, service: &str, ready: usize, total: usize) {
        self.last
            .insert(service.to_owned(), service_state(ready, total));
    }

    /// Records `service` with `ready` of `total` targets ready at `at`; returns the event to send
    /// when its [`ServiceHealth`] changed.
    pub fn observe(
        &mut self,
        service: &str,
        ready: usize,
        total: usize,
        at: SystemTime,
    ) -> Option<ServiceEvent> {
        let to = service_state(ready, total);
        let from = self.last.insert(service.to_owned(), to);
        let changed = match from {
            Some(from) => from != to,
            None => to != ServiceHealth::Healthy,
        };
        changed.then(|| ServiceEvent {
            service: service.to_owned(),
            from,
            to,
            ready,
            total,
            at,
        })
    }
}

impl NotifyEvent {
    /// `target` or `service`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyEvent::Target(_) => "target",
            NotifyEvent::Service(_) => "service",
        }
    }

    /// `svc/node` for a target, `svc` for a service.
    pub fn name(&self) -> String {
        match self {
            NotifyEvent::Target(t) => format!("{}/{}", t.service, t.target),
            NotifyEvent::Service(s) => s.service.clone(),
        }
    }

    /// The new state in upper case, as the script's third argument: `UP`/`DOWN`/`UNKNOWN` for a
    /// target, `HEALTHY`/`DEGRADED`/`DOWN` for a service.
    pub fn state(&self) -> String {
        match self {
            NotifyEvent::Target(t) => t.to.as_str().to_ascii_uppercase(),
            NotifyEvent::Service(s) => s.to.as_str().to_ascii_uppercase(),
        }
    }

    /// When it happened.
    pub fn at(&self) -> SystemTime {
        match self {
            NotifyEvent::Target(t) => t.at,
            NotifyEvent::Service(s) => s.at,
        }
    }

    /// The ordering key: events with the same key are delivered in order, one at a time.
    pub(crate) fn lane_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        match self {
            NotifyEvent::Target(t) => (&t.service, &t.target).hash(&mut h),
            NotifyEvent::Service(s) => s.service.hash(&mut h),
        }
        h.finish()
    }
}

fn serialize_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

pub use k8s_endpoints::time::rfc3339;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    pub(crate) fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn service_state_boundaries() {
        assert_eq!(service_state(0, 0), ServiceHealth::Down);
        assert_eq!(service_state(0, 3), ServiceHealth::Down);
        assert_eq!(service_state(1, 3), ServiceHealth::Degraded);
        assert_eq!(service_state(3, 3), ServiceHealth::Healthy);
    }

    #[test]
    fn json_schema() {
        let target = NotifyEvent::Target(TargetEvent {
            service: "redis".into(),
            target: "node-02".into(),
            ip: "198.51.100.11".parse().unwrap(),
            port: 38080,
            from: Health::Up,
            to: Health::Down,
            error: Some("connection refused".into()),
            at: at(1_735_787_045, 678),
            agreed: None,
        });
        assert_eq!(
            serde_json::to_value(&target).unwrap(),
            serde_json::json!({"kind": "target", "service": "redis", "target": "node-02",
                "ip": "198.51.100.11", "port": 38080, "from": "up", "to": "down",
                "error": "connection refused", "at": "2025-01-02T03:04:05.678Z",
                "agreed": null})
        );
        let decided = TargetEvent::decided(
            &probe_core::Target::new("redis", "node-02", [198, 51, 100, 11].into(), 38080),
            true,
            &k8s_endpoints::consensus::Tally {
                views: 3,
                up: 3,
                ..Default::default()
            },
        );
        let v = serde_json::to_value(&decided).unwrap();
        assert_eq!((&v["from"], &v["to"]), (&"down".into(), &"up".into()));
        assert_eq!(v["agreed"], "3/3 see it up");
        assert_eq!(
            (target.name(), target.state()),
            ("redis/node-02".into(), "DOWN".into())
        );
        let service = NotifyEvent::Service(ServiceEvent {
            service: "redis".into(),
            from: None,
            to: ServiceHealth::Degraded,
            ready: 2,
            total: 3,
            at: at(0, 0),
        });
        assert_eq!(
            serde_json::to_value(&service).unwrap(),
            serde_json::json!({"kind": "service", "service": "redis", "from": null,
                "to": "degraded", "ready": 2, "total": 3, "at": "1970-01-01T00:00:00.000Z"})
        );
        assert_eq!(
            (service.name(), service.state()),
            ("redis".into(), "DEGRADED".into())
        );
    }

    #[test]
    fn tracker_reports_changes_only() {
        let mut t = ServiceTracker::new();
        assert_eq!(
            t.observe("a", 3, 3, at(0, 0)),
            None,
            "a healthy start is quiet"
        );
        let e = t.observe("a", 2, 3, at(1, 0)).unwrap();
        assert_eq!(
            (e.from, e.to),
            (Some(ServiceHealth::Healthy), ServiceHealth::Degraded)
        );
        assert_eq!(t.observe("a", 1, 3, at(2, 0)), None, "still degraded");
        let e = t.observe("b", 0, 2, at(2, 0)).unwrap();
        assert_eq!((e.from, e.to), (None, ServiceHealth::Down));
        t.restore("c", 0, 1);
        assert_eq!(
            t.observe("c", 0, 1, at(3, 0)),
            None,
            "restored state is not news"
        );
    }

    #[test]
    fn first_up_is_quiet() {
        let now = tokio::time::Instant::now();
        let tr = |from, to| Transition { from, to, at: now };
        assert!(!should_notify(&tr(Health::Unknown, Health::Up)));
        assert!(should_notify(&tr(Health::Unknown, Health::Down)));
        assert!(should_notify(&tr(Health::Up, Health::Down)));
        assert!(should_notify(&tr(Health::Down, Health::Up)));
        assert!(!should_notify(&tr(Health::Up, Health::Up)));
    }
}
