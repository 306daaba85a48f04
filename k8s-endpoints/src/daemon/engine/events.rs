//! Logs by event, not by target: the first probes of a service are one summary line, a
//! transition after that is one line per target, except that a burst in one service (more than
//! [`BURST`] transitions within a second) becomes one summary line for that service and
//! second. At 100,000 targets a start logs one line per service, not one per target, and a
//! rack going dark is a handful of lines.

use std::time::Duration;

use probe_core::{Health, Target};
use tokio::time::Instant;

/// Transitions of one service logged one by one within a second; the rest are summed up.
pub(super) const BURST: u32 = 20;

/// The engine's logs by event, in one place.
#[derive(Debug)]
pub(super) struct Logs {
    /// Each service's first probes, logged as one line per service.
    pub(super) first_round: FirstRound,
    /// Each service's transitions of the current second, so that a burst is one line.
    pub(super) bursts: Bursts,
    /// Probe slots skipped for want of a permit, warned about once a minute at most.
    pub(super) skips: Skips,
    /// Each service's first reconcile, summed up in one line.
    pub(super) start_writes: StartWrites,
}

/// How many down targets a first-round summary names.
const NAMED: usize = 3;

/// Each service's first round: targets whose first verdict is still due, and what came so far.
#[derive(Debug, Default)]
pub(super) struct FirstRound {
    services: Vec<RoundTally>,
}

#[derive(Debug, Default)]
struct RoundTally {
    pending: usize,
    up: usize,
    down: usize,
    /// `name (error)` of the first down targets.
    named: Vec<String>,
}

impl FirstRound {
    /// `pending[i]`: service `i`'s targets without a verdict (none restored from the store).
    pub(super) fn new(pending: impl IntoIterator<Item = usize>) -> Self {
        FirstRound {
            services: pending
                .into_iter()
                .map(|pending| RoundTally {
                    pending,
                    ..RoundTally::default()
                })
                .collect(),
        }
    }

    /// A target of `service` got its first verdict; logs the service's summary when it was
    /// the last one.
    pub(super) fn record(
        &mut self,
        service: usize,
        key: &str,
        target: &Target,
        health: Health,
        error: Option<&str>,
    ) {
        let Some(t) = self.services.get_mut(service) else {
            return;
        };
        if t.pending == 0 {
            return;
        }
        t.pending -= 1;
        if health == Health::Up {
            t.up += 1;
        } else {
            t.down += 1;
            if t.named.len() < NAMED {
                t.named.push(format!(
                    "{} {} ({})",
                    target.name,
                    target.addr(),
                    error.unwrap_or("down")
                ));
            }
        }
        if t.pending > 0 {
            return;
        }
        if t.down == 0 {
            tracing::info!(service = key, up = t.up, "first probes: every target is up");
        } else {
            let more = t.down.saturating_sub(t.named.len());
            let examples = if more > 0 {
                format!("{}; and {more} more", t.named.join("; "))
            } else {
                t.named.join("; ")
            };
            tracing::warn!(
                service = key, up = t.up, down = t.down, down_targets = %examples,
                "first probes: some targets are down"
            );
        }
    }
}

/// Per service, the transitions of the current second.
#[derive(Debug, Default)]
pub(super) struct Bursts {
    services: Vec<Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    quiet_up: u32,
    quiet_down: u32,
}

impl Bursts {
    /// Windows for `services` services.
    pub(super) fn new(services: usize) -> Self {
        let now = Instant::now();
        Bursts {
            services: vec![
                Window {
                    start: now,
                    logged: 0,
                    quiet_up: 0,
                    quiet_down: 0,
                };
                services
            ],
        }
    }

    /// Whether a transition of `service` into `to` at `now` is logged on its own line; when
    /// not, it is counted for the service's summary line.
    pub(super) fn allow(&mut self, service: usize, key: &str, to: Health, now: Instant) -> bool {
        let Some(w) = self.services.get_mut(service) else {
            return true;
        };
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            summarize(key, w);
            *w = Window {
                start: now,
                logged: 0,
                quiet_up: 0,
                quiet_down: 0,
            };
        }
        if w.logged < BURST {
            w.logged += 1;
            return true;
        }
        if to == Health::Up {
            w.quiet_up += 1;
        } else {
            w.quiet_down += 1;
        }
        false
    }

    /// Logs the summary of every window that ended by `now` (called on a timer, so the last
    /// burst of a quiet service is not held back).
    pub(super) fn flush(&mut self, now: Instant, key: impl Fn(usize) -> String) {
        for (i, w) in self.services.iter_mut().enumerate() {
            if (w.quiet_up > 0 || w.quiet_down > 0)
                && now.duration_since(w.start) >= Duration::from_secs(1)
            {
                summarize(&key(i), w);
                w.quiet_up = 0;
                w.quiet_down = 0;
            }
        }
    }
}

/// The start's first reconcile of each service, summed up in one line: at 1,000 services a
/// line per write would double the start's log. A service's first write is logged at debug
/// level; a failure is logged as always.
#[derive(Debug)]
pub(super) struct StartWrites {
    done: Vec<bool>,
    remaining: usize,
    created: usize,
    updated: usize,
    unchanged: usize,
    failed: usize,
}

/// How a service's first reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstReconcile {
    Written(crate::ReconcileAction),
    /// Failed, or refused (a selector): logged on its own.
    NotWritten,
}

impl StartWrites {
    pub(super) fn new(services: usize) -> Self {
        StartWrites {
            done: vec![false; services],
            remaining: services,
            created: 0,
            updated: 0,
            unchanged: 0,
            failed: 0,
        }
    }

    /// Service `service`'s reconcile ended with `how`. Returns whether it was the service's
    /// first (so its write is summed up here, not logged on its own); logs the summary when it
    /// was the last service's first.
    pub(super) fn record(&mut self, service: usize, how: FirstReconcile) -> bool {
        let Some(done) = self.done.get_mut(service) else {
            return false;
        };
        if *done {
            return false;
        }
        *done = true;
        self.remaining -= 1;
        match how {
            FirstReconcile::Written(crate::ReconcileAction::Created) => self.created += 1,
            FirstReconcile::Written(a) if a.is_write() => self.updated += 1,
            FirstReconcile::Written(_) => self.unchanged += 1,
            FirstReconcile::NotWritten => self.failed += 1,
        }
        if self.remaining == 0 {
            tracing::info!(
                services = self.done.len(),
                created = self.created,
                updated = self.updated,
                unchanged = self.unchanged,
                not_written = self.failed,
                "first reconcile of every service done (each service's change is logged at \
                 debug level; later writes one by one)"
            );
        }
        true
    }
}

/// Least time between two warnings about skipped probe slots.
pub(super) const SKIPS_EVERY: Duration = Duration::from_secs(60);

/// Probe slots skipped because the probes do not keep up: counted, and warned about at the
/// first skip, then at most once every [`SKIPS_EVERY`].
#[derive(Debug, Default)]
pub(super) struct Skips {
    /// Skipped since the last warning.
    pending: u64,
    last_warning: Option<Instant>,
}

impl Skips {
    /// Counts `count` skipped slots at `now`; returns how many to warn about (those since the
    /// last warning) when a warning is due.
    pub(super) fn record(&mut self, count: u32, now: Instant) -> Option<u64> {
        self.pending = self.pending.saturating_add(u64::from(count));
        if self.pending == 0
            || self
                .last_warning
                .is_some_and(|at| now.duration_since(at) < SKIPS_EVERY)
        {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

fn summarize(key: &str, w: &Window) {
    if w.quiet_up + w.quiet_down > 0 {
        tracing::warn!(
            service = key,
            down = w.quiet_down,
            up = w.quiet_up,
            "more transitions in one second than are logged one by one (the first {BURST} were); /status shows every target"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_one_by_one_up_to_the_limit_then_counted() {
        let mut b = Bursts::new(2);
        let t0 = Instant::now();
        let allowed = (0..50)
            .filter(|_| b.allow(0, "web", Health::Down, t0))
            .count();
        assert_eq!(allowed, BURST as usize);
        assert_eq!(b.services[0].quiet_down, 30);
        // Another service is not held back by this one.
        assert!(b.allow(1, "db", Health::Down, t0));
        // A second later the window starts again.
        assert!(b.allow(0, "web", Health::Up, t0 + Duration::from_secs(1)));
        assert_eq!(b.services[0].quiet_down, 0);
    }

    #[test]
    fn the_starts_writes_are_one_line_then_each_write_is_its_own() {
        use crate::ReconcileAction as A;
        let mut w = StartWrites::new(3);
        assert!(w.record(0, FirstReconcile::Written(A::Created)));
        assert!(
            !w.record(0, FirstReconcile::Written(A::Updated)),
            "not its first"
        );
        assert!(w.record(2, FirstReconcile::NotWritten));
        assert_eq!(w.remaining, 1);
        assert!(w.record(1, FirstReconcile::Written(A::Unchanged)));
        assert_eq!(w.remaining, 0);
        assert_eq!((w.created, w.updated, w.unchanged, w.failed), (1, 0, 1, 1));
        assert!(!w.record(1, FirstReconcile::Written(A::Updated)));
    }

    #[test]
    fn skipped_slots_are_warned_about_at_once_then_once_a_minute() {
        let mut s = Skips::default();
        let t0 = Instant::now();
        assert_eq!(s.record(0, t0), None);
        assert_eq!(s.record(3, t0), Some(3));
        assert_eq!(s.record(5, t0 + Duration::from_secs(30)), None);
        assert_eq!(s.record(1, t0 + Duration::from_secs(59)), None);
        assert_eq!(s.record(2, t0 + SKIPS_EVERY), Some(8));
        assert_eq!(s.record(0, t0 + 2 * SKIPS_EVERY), None);
        assert_eq!(s.record(1, t0 + 2 * SKIPS_EVERY), Some(1));
    }

    #[test]
    fn the_first_round_waits_for_every_target_of_a_service() {
        let mut r = FirstRound::new([2, 0]);
        let t = Target::new("web", "n1", [127, 0, 0, 1].into(), 80);
        r.record(0, "web", &t, Health::Down, Some("refused"));
        assert_eq!(r.services[0].pending, 1);
        assert_eq!(r.services[0].named, ["n1 127.0.0.1:80 (refused)"]);
        r.record(0, "web", &t, Health::Up, None);
        assert_eq!((r.services[0].pending, r.services[0].up), (0, 1));
        // A service whose state was restored has no first round.
        r.record(1, "db", &t, Health::Up, None);
        assert_eq!(r.services[1].up, 0);
    }
}
