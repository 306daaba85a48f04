//! The election's decisions, without I/O: what this replica saw of the lock and when, whether
//! it leads and until when, and what to write next. Every input time is passed in, so the
//! rules are tested without sleeping.
//!
//! The safety argument (SPEC §9), on one replica's monotonic clock:
//! * a leader's term ends at `start of its last successful write + renew_deadline`;
//! * another replica may take over only when the record it last saw change has stayed the
//!   same for `leaseDurationSeconds`, counted from when it *saw* the change, which is after
//!   the write started;
//! * `renew_deadline < lease_duration ≤ leaseDurationSeconds`, so the term ends before anyone
//!   else may write, and the conditional write (`resourceVersion`) settles any tie.

use std::time::Duration;

use tokio::time::Instant;

use super::{ElectionConfig, LeaderRecord, MicroTime, Version};

/// The last record this replica read or wrote, and when it last changed as far as this
/// replica knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The record.
    pub record: LeaderRecord,
    /// Its version.
    pub version: Version,
    /// When this replica first saw this record (local monotonic clock).
    pub at: Instant,
}

/// What to do after reading the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The lock does not exist: create it holding this record.
    Create(LeaderRecord),
    /// Write this record over `version` (a renewal, or a takeover of an expired or released
    /// lock).
    Update {
        /// The record to write.
        record: LeaderRecord,
        /// The version read, so that a competing write makes this one fail.
        version: Version,
    },
    /// Someone else holds an unexpired lock.
    Wait {
        /// The holder.
        holder: String,
        /// When it expires if it does not change (local clock).
        expires: Instant,
    },
}

/// The state machine of one candidate.
#[derive(Debug, Clone)]
pub struct ElectionCore {
    config: ElectionConfig,
    observed: Option<Observation>,
    /// `(since, deadline)` of the current term, when leading.
    term: Option<(Instant, Instant)>,
}

impl ElectionCore {
    /// A candidate that has seen nothing yet. `config` should be valid.
    pub fn new(config: ElectionConfig) -> Self {
        Self {
            config,
            observed: None,
            term: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// The last record seen or written.
    pub fn observed(&self) -> Option<&Observation> {
        self.observed.as_ref()
    }

    /// The holder the lock last showed, if any.
    pub fn holder(&self) -> Option<&str> {
        self.observed.as_ref().and_then(|o| o.record.holder())
    }

    /// Whether this replica leads at `now`: it holds a term whose deadline has not passed.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.term.is_some_and(|(_, deadline)| now < deadline)
    }

    /// When the current term ends unless renewed.
    pub fn deadline(&self) -> Option<Instant> {
        self.term.map(|(_, deadline)| deadline)
    }

    /// When the current term began.
    pub fn leading_since(&self) -> Option<Instant> {
        self.term.map(|(since, _)| since)
    }

    /// Ends the term if its deadline has passed at `now`; `true` if it just ended.
    pub fn expire(&mut self, now: Instant) -> bool {
        if self.term.is_some() && !self.is_leader(now) {
            self.term = None;
            return true;
        }
        false
    }

    /// Stops leading (shutdown, or the lock shows another holder).
    pub fn step_down(&mut self) {
        self.term = None;
    }

    /// Takes in a read of the lock made at `now`. A record that differs from the last one
    /// restarts its expiry clock. While leading, a lock that is gone or names another holder
    /// ends the term at once.
    pub fn observe(&mut self, current: Option<(LeaderRecord, Version)>, now: Instant) {
        let Some((record, version)) = current else {
            self.observed = None;
            self.term = None;
            return;
        };
        if record.holder_identity != self.config.identity {
            self.term = None;
        }
        let at = match &self.observed {
            Some(o) if o.record == record => o.at,
            _ => now,
        };
        self.observed = Some(Observation {
            record,
            version,
            at,
        });
    }

    /// When the observed record expires for a candidate: `leaseDurationSeconds` after it
    /// was first seen (this replica's `lease_duration` when the record has none); `None` when
    /// nothing was seen or the time is beyond the clock's range (never expires).
    pub fn expires(&self) -> Option<Instant> {
        let o = self.observed.as_ref()?;
        let ttl = u64::try_from(o.record.lease_duration_seconds)
            .ok()
            .filter(|s| *s > 0)
            .map_or(self.config.lease_duration, Duration::from_secs);
        o.at.checked_add(ttl)
    }

    /// What to write after [`observe`](Self::observe), at `now` (`wall` is written into the
    /// record, never compared).
    pub fn decide(&self, now: Instant, wall: MicroTime) -> Decision {
        let me = &self.config.identity;
        let fresh = LeaderRecord {
            holder_identity: me.clone(),
            lease_duration_seconds: self.config.lease_duration_seconds(),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            lease_transitions: 0,
        };
        let Some(o) = &self.observed else {
            return Decision::Create(fresh);
        };
        let old = &o.record;
        let record = if old.holder_identity == *me {
            // Ours: a renewal keeps when it was acquired and how often it changed hands.
            LeaderRecord {
                acquire_time: old.acquire_time.or(Some(wall)),
                lease_transitions: old.lease_transitions,
                ..fresh
            }
        } else {
            if let Some(holder) = old.holder() {
                match self.expires() {
                    Some(expires) if now >= expires => {}
                    expires => {
                        return Decision::Wait {
                            holder: holder.to_owned(),
                            expires: expires.unwrap_or(o.at),
                        };
                    }
                }
            }
            LeaderRecord {
                lease_transitions: old.lease_transitions.saturating_add(1),
                ..fresh
            }
        };
        Decision::Update {
            record,
            version: o.version.clone(),
        }
    }

    /// The renewal to write without reading first, when leading at `now` and the last
    /// record seen is this replica's own.
    pub fn renewal(&self, now: Instant, wall: MicroTime) -> Option<(LeaderRecord, Version)> {
        let o = self.observed.as_ref()?;
        if !self.is_leader(now) || o.record.holder_identity != self.config.identity {
            return None;
        }
        match self.decide(now, wall) {
            Decision::Update { record, version } => Some((record, version)),
            _ => None,
        }
    }

    /// A write of `record` that started at `started` succeeded at `now` with `version`: lead
    /// until `started + renew_deadline`.
    pub fn acquired(
        &mut self,
        record: LeaderRecord,
        version: Version,
        started: Instant,
        now: Instant,
    ) {
        let deadline = started + self.config.renew_deadline;
        let since = match self.term {
            Some((since, _)) if self.is_leader(now) => since,
            _ => now,
        };
        self.term = (now < deadline).then_some((since, deadline));
        self.observed = Some(Observation {
            record,
            version,
            at: now,
        });
    }

    /// The record that releases the lock, when this replica leads at `now`: no holder,
    /// `leaseDurationSeconds: 1`, the transitions kept.
    pub fn release(&self, now: Instant, wall: MicroTime) -> Option<(LeaderRecord, Version)> {
        let o = self.observed.as_ref()?;
        if !self.is_leader(now) || o.record.holder_identity != self.config.identity {
            return None;
        }
        let record = LeaderRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            lease_transitions: o.record.lease_transitions,
        };
        Some((record, o.version.clone()))
    }

    /// The release was written at `now` with `version`.
    pub fn released(&mut self, record: LeaderRecord, version: Version, now: Instant) {
        self.term = None;
        self.observed = Some(Observation {
            record,
            version,
            at: now,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const LEASE: Duration = Duration::from_millis(1500);
    const RENEW: Duration = Duration::from_millis(1000);

    fn core(identity: &str) -> ElectionCore {
        ElectionCore::new(ElectionConfig {
            lease_duration: LEASE,
            renew_deadline: RENEW,
            retry_period: Duration::from_millis(200),
            ..ElectionConfig::new(identity)
        })
    }

    fn wall(s: &str) -> MicroTime {
        s.parse().unwrap()
    }

    fn held(holder: &str, transitions: i32) -> LeaderRecord {
        LeaderRecord {
            holder_identity: holder.into(),
            lease_duration_seconds: 2,
            acquire_time: Some(wall("2026-01-01T00:00:00Z")),
            renew_time: Some(wall("2026-01-01T00:00:01Z")),
            lease_transitions: transitions,
        }
    }

    fn v(s: &str) -> Version {
        Version(s.into())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn creates_a_missing_lock() {
        let t0 = Instant::now();
        let mut c = core("a");
        c.observe(None, t0);
        let Decision::Create(r) = c.decide(t0, wall("2026-01-02T03:04:05Z")) else {
            panic!("expected create");
        };
        assert_eq!(r.holder_identity, "a");
        assert_eq!(r.lease_duration_seconds, 2);
        assert_eq!(r.lease_transitions, 0);
        assert_eq!(r.acquire_time, r.renew_time);
        assert!(!c.is_leader(t0));
        c.acquired(r, v("1"), t0, t0 + ms(5));
        assert!(c.is_leader(t0 + ms(999)));
        assert!(!c.is_leader(t0 + RENEW));
        assert_eq!(c.deadline(), Some(t0 + RENEW));
        assert_eq!(c.leading_since(), Some(t0 + ms(5)));
    }

    #[test]
    fn expiry_is_counted_from_when_the_record_was_seen_to_change() {
        let t0 = Instant::now();
        let mut c = core("b");
        c.observe(Some((held("a", 0), v("1"))), t0);
        // The same record read again later does not restart the clock.
        c.observe(Some((held("a", 0), v("1"))), t0 + ms(1900));
        assert!(
            matches!(c.decide(t0 + ms(1999), MicroTime::now()), Decision::Wait { ref holder, expires } if holder == "a" && expires == t0 + ms(2000))
        );
        // A renewal (new renewTime) restarts it, whatever the renewTime says.
        let mut renewed = held("a", 0);
        renewed.renew_time = Some(wall("2000-01-01T00:00:00Z"));
        c.observe(Some((renewed, v("2"))), t0 + ms(1950));
        assert!(matches!(
            c.decide(t0 + ms(3900), MicroTime::now()),
            Decision::Wait { .. }
        ));
        let Decision::Update { record, version } = c.decide(t0 + ms(3950), MicroTime::now()) else {
            panic!("expected a takeover");
        };
        assert_eq!(version, v("2"));
        assert_eq!(record.holder_identity, "b");
        assert_eq!(record.lease_transitions, 1);
        assert_eq!(record.acquire_time, record.renew_time);
    }

    #[test]
    fn a_record_without_duration_uses_ours() {
        let t0 = Instant::now();
        let mut c = core("b");
        let mut r = held("a", 0);
        r.lease_duration_seconds = 0;
        c.observe(Some((r, v("1"))), t0);
        assert_eq!(c.expires(), Some(t0 + LEASE));
    }

    #[test]
    fn a_released_lock_is_taken_at_once() {
        let t0 = Instant::now();
        let mut c = core("b");
        let released = LeaderRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            lease_transitions: 4,
            ..LeaderRecord::default()
        };
        c.observe(Some((released, v("9"))), t0);
        let Decision::Update { record, .. } = c.decide(t0, MicroTime::now()) else {
            panic!("expected a takeover");
        };
        assert_eq!(record.lease_transitions, 5);
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let mut c = core("a");
        c.observe(Some((held("a", 7), v("3"))), t0);
        let (record, version) = match c.decide(t0, wall("2026-01-01T00:00:05Z")) {
            Decision::Update { record, version } => (record, version),
            d => panic!("{d:?}"),
        };
        assert_eq!(version, v("3"));
        assert_eq!(record.acquire_time, Some(wall("2026-01-01T00:00:00Z")));
        assert_eq!(record.renew_time, Some(wall("2026-01-01T00:00:05Z")));
        assert_eq!(record.lease_transitions, 7);
        c.acquired(record, v("4"), t0, t0 + ms(3));
        let (again, version) = c
            .renewal(t0 + ms(200), wall("2026-01-01T00:00:06Z"))
            .unwrap();
        assert_eq!(version, v("4"));
        assert_eq!(again.acquire_time, Some(wall("2026-01-01T00:00:00Z")));
        assert_eq!(again.lease_transitions, 7);
        // A renewal started at 200 ms moves the deadline to 1200 ms; the term keeps its start.
        c.acquired(again, v("5"), t0 + ms(200), t0 + ms(210));
        assert_eq!(c.deadline(), Some(t0 + ms(1200)));
        assert_eq!(c.leading_since(), Some(t0 + ms(3)));
        // No renewal once the deadline passed.
        assert!(c.renewal(t0 + ms(1200), MicroTime::now()).is_none());
        assert!(c.expire(t0 + ms(1200)));
        assert!(!c.expire(t0 + ms(1300)));
    }

    #[test]
    fn the_term_ends_before_anyone_may_take_over() {
        let t0 = Instant::now();
        let mut leader = core("a");
        let mut other = core("b");
        leader.observe(None, t0);
        let Decision::Create(r) = leader.decide(t0, MicroTime::now()) else {
            panic!()
        };
        // The write started at t0 and was seen by the other replica as soon as possible.
        leader.acquired(r.clone(), v("1"), t0, t0 + ms(1));
        other.observe(Some((r, v("1"))), t0 + ms(1));
        let leader_stops = leader.deadline().unwrap();
        let other_may_write = other.expires().unwrap();
        assert!(leader_stops < other_may_write);
        assert!(other_may_write - leader_stops >= LEASE - RENEW);
    }

    #[test]
    fn another_holder_ends_the_term_at_once() {
        let t0 = Instant::now();
        let mut c = core("a");
        c.acquired(held("a", 0), v("1"), t0, t0);
        assert!(c.is_leader(t0 + ms(10)));
        c.observe(Some((held("b", 1), v("2"))), t0 + ms(10));
        assert!(!c.is_leader(t0 + ms(10)));
        assert_eq!(c.holder(), Some("b"));
        c.acquired(held("a", 2), v("3"), t0 + ms(20), t0 + ms(20));
        c.observe(None, t0 + ms(30));
        assert!(!c.is_leader(t0 + ms(30)));
    }

    #[test]
    fn release_only_when_leading() {
        let t0 = Instant::now();
        let mut c = core("a");
        assert!(c.release(t0, MicroTime::now()).is_none());
        c.acquired(held("a", 3), v("1"), t0, t0);
        let (r, version) = c.release(t0 + ms(5), MicroTime::now()).unwrap();
        assert_eq!(version, v("1"));
        assert_eq!(r.holder(), None);
        assert_eq!(r.lease_duration_seconds, 1);
        assert_eq!(r.lease_transitions, 3);
        c.released(r, v("2"), t0 + ms(6));
        assert!(!c.is_leader(t0 + ms(6)));
        assert!(c.release(t0 + ms(7), MicroTime::now()).is_none());
        // Past the deadline there is nothing to release.
        c.acquired(held("a", 3), v("3"), t0, t0);
        assert!(c.release(t0 + RENEW, MicroTime::now()).is_none());
    }
}
