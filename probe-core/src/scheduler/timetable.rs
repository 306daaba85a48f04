//! When each target of one shard is probed: the timing rules of the [module docs](super), as
//! synchronous logic driven by the shard's loop (no clock reads, no I/O).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{ProbeEvent, ScheduleOptions, TargetId};
use crate::check::Check;
use crate::health::{Health, HealthTracker};
use crate::outcome::ProbeOutcome;
use crate::target::Target;

/// One target as handed to a shard.
#[derive(Debug)]
pub(super) struct SlotInit {
    pub(super) id: TargetId,
    pub(super) target: Target,
    pub(super) check: Arc<Check>,
    pub(super) tracker: HealthTracker,
    /// Already [sanitized](ScheduleOptions::sanitized).
    pub(super) opts: ScheduleOptions,
    /// The target's first regular slot (start of the run plus its phase).
    pub(super) first: Instant,
}

/// A probe to start now.
#[derive(Debug)]
pub(super) struct Launch {
    pub(super) idx: usize,
    pub(super) target: Target,
    pub(super) check: Arc<Check>,
    pub(super) timeout: Duration,
    pub(super) started: Instant,
    /// Regular slots that passed while this probe waited for a permit (rule 2).
    pub(super) skipped: u32,
}

/// A probe that finished.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) idx: usize,
    pub(super) target: Target,
    pub(super) started: Instant,
    pub(super) skipped: u32,
    pub(super) outcome: ProbeOutcome,
}

#[derive(Debug)]
struct Slot {
    id: TargetId,
    target: Target,
    check: Arc<Check>,
    tracker: HealthTracker,
    opts: ScheduleOptions,
    /// The next slot of the regular grid `first + k × interval`.
    next_regular: Instant,
    /// When the most recent probe started.
    last_start: Option<Instant>,
    in_flight: u32,
    /// Waiting in the ready queue for a permit (and then without a timer entry).
    queued: bool,
    /// Generation of the live timer entry; older entries are stale and skipped.
    generation: u32,
    /// Due time of the live timer entry.
    scheduled: Option<Instant>,
}

impl Slot {
    /// In doubt: the last result disagrees with the state, or the target is up and a probe of it
    /// is pending (which only matters once that probe is `fast_interval` old, see
    /// [`fast_due`](Self::fast_due)).
    fn doubt(&self) -> bool {
        self.tracker.in_doubt() || (self.tracker.state() == Health::Up && self.in_flight > 0)
    }

    /// Probes of this target allowed in flight at once: enough to confirm a change while in
    /// doubt, otherwise one.
    fn limit(&self) -> u32 {
        if !self.doubt() {
            return 1;
        }
        match self.tracker.state() {
            Health::Up => self.tracker.fall(),
            Health::Down => self.tracker.rise(),
            Health::Unknown => 1,
        }
    }

    /// When the next confirming probe is due: `fast_interval` after the last start, while in
    /// doubt and below the limit.
    fn fast_due(&self) -> Option<Instant> {
        if !self.doubt() || self.in_flight >= self.limit() {
            return None;
        }
        self.last_start.map(|s| s + self.opts.fast_interval)
    }

    /// When this target ought to be probed, judged by its latest probe: `fast_interval` after
    /// it while a confirmation is due, `interval` after it otherwise, and its first slot before
    /// any probe. Orders the queue of probes waiting for a permit (rule 7).
    fn wanted(&self, now: Instant) -> Instant {
        let Some(last) = self.last_start else {
            return self.next_regular.min(now);
        };
        match self.fast_due() {
            Some(fast) if fast <= now => fast,
            _ => last + self.opts.interval,
        }
    }

    fn due(&self) -> Instant {
        match self.fast_due() {
            Some(fast) => fast.min(self.next_regular),
            None => self.next_regular,
        }
    }
}

/// How many slots of the grid `slot + k × interval` (k ≥ 0) are not later than `now`.
fn slots_passed(slot: Instant, interval: Duration, now: Instant) -> u32 {
    if slot > now {
        return 0;
    }
    let behind = now.duration_since(slot).as_nanos();
    // `interval` is at least 1 ms (sanitized), so no division by zero.
    let k = behind / interval.as_nanos().max(1) + 1;
    u32::try_from(k).unwrap_or(u32::MAX)
}

/// The first slot of the grid `slot + k × interval` (k ≥ 0) that is later than `now`.
fn next_slot_after(slot: Instant, interval: Duration, now: Instant) -> Instant {
    slot + interval.saturating_mul(slots_passed(slot, interval, now))
}

/// The targets of one shard, their timer heap and the queue of probes waiting for a permit.
#[derive(Debug)]
pub(super) struct Timetable {
    slots: Vec<Slot>,
    /// `(due, slot index, generation)`, earliest first.
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Probes waiting for a permit, `(wanted, slot index)`: the longest overdue first (rule 7).
    ready: BinaryHeap<Reverse<(Instant, usize)>>,
    statics: Vec<usize>,
}

impl Timetable {
    /// A timetable whose targets first fall due at their `first` instant. Static checks get no
    /// timer: [`static_events`](Self::static_events) reports them once.
    pub(super) fn new(inits: Vec<SlotInit>) -> Self {
        let mut table = Self {
            slots: Vec::with_capacity(inits.len()),
            heap: BinaryHeap::with_capacity(inits.len()),
            ready: BinaryHeap::new(),
            statics: Vec::new(),
        };
        for init in inits {
            let idx = table.slots.len();
            let is_static = matches!(*init.check, Check::Static);
            table.slots.push(Slot {
                id: init.id,
                target: init.target,
                check: init.check,
                tracker: init.tracker,
                opts: init.opts,
                next_regular: init.first,
                last_start: None,
                in_flight: 0,
                queued: false,
                generation: 0,
                scheduled: None,
            });
            if is_static {
                table.statics.push(idx);
            } else {
                table.schedule(idx);
            }
        }
        table
    }

    /// One event per static target, marking it up as of `now`.
    pub(super) fn static_events(&mut self, now: Instant) -> Vec<ProbeEvent> {
        let statics = std::mem::take(&mut self.statics);
        statics
            .into_iter()
            .map(|idx| {
                let slot = &mut self.slots[idx];
                let transition = slot.tracker.observe(true, now);
                ProbeEvent {
                    id: slot.id,
                    target: slot.target.clone(),
                    outcome: ProbeOutcome::up(Duration::ZERO),
                    started: now,
                    finished: now,
                    skipped_slots: 0,
                    tracker: slot.tracker.clone(),
                    transition,
                }
            })
            .collect()
    }

    /// When the earliest armed timer falls due, if any. Stale entries on top of the heap are
    /// dropped first, so the shard never wakes for nothing (every healthy probe leaves one: the
    /// `fast_interval` check armed while it was pending).
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((due, idx, generation))) = self.heap.peek() {
            let slot = &self.slots[idx];
            if slot.generation == generation && slot.scheduled.is_some() {
                return Some(due);
            }
            self.heap.pop();
        }
        None
    }

    /// `(first regular slot, id)` of every probed target, for tests of the phases.
    #[cfg(test)]
    pub(super) fn firsts(&mut self) -> Vec<(Instant, TargetId)> {
        let mut firsts = Vec::new();
        while let Some(Reverse((due, idx, _))) = self.heap.pop() {
            firsts.push((due, self.slots[idx].id));
        }
        firsts
    }

    /// Whether probes wait for a permit.
    pub(super) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Moves every target whose timer is due by `now` to the ready queue, or re-arms its timer
    /// when what fell due no longer needs a probe.
    pub(super) fn pop_due(&mut self, now: Instant) {
        while let Some(&Reverse((due, idx, generation))) = self.heap.peek() {
            if due > now {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[idx];
            if slot.generation != generation || slot.scheduled.is_none() {
                continue;
            }
            slot.scheduled = None;
            let regular = slot.next_regular <= now;
            if regular {
                // A regular slot is used or, with the target's limit in flight, skipped.
                slot.next_regular = next_slot_after(slot.next_regular, slot.opts.interval, now);
            }
            let fast = slot.fast_due().is_some_and(|t| t <= now);
            if (regular || fast) && slot.in_flight < slot.limit() {
                slot.queued = true;
                self.ready.push(Reverse((slot.wanted(now), idx)));
            } else {
                self.schedule(idx);
            }
        }
    }

    /// Takes the probe that waited longest for a permit, judged by its target's latest probe
    /// (rule 7), and marks it started at `now`.
    pub(super) fn start_next(&mut self, now: Instant) -> Option<Launch> {
        let Reverse((_, idx)) = self.ready.pop()?;
        let slot = &mut self.slots[idx];
        slot.queued = false;
        slot.in_flight = slot.in_flight.saturating_add(1);
        slot.last_start = Some(now);
        // Regular slots that passed while waiting for a permit are skipped, not made up.
        let skipped = slots_passed(slot.next_regular, slot.opts.interval, now);
        slot.next_regular = next_slot_after(slot.next_regular, slot.opts.interval, now);
        let launch = Launch {
            idx,
            target: slot.target.clone(),
            check: Arc::clone(&slot.check),
            timeout: slot.opts.timeout,
            started: now,
            skipped,
        };
        self.schedule(idx);
        Some(launch)
    }

    /// Feeds a finished probe to its target's tracker (at `now`, in completion order) and returns
    /// the event to report.
    pub(super) fn complete(&mut self, done: Done, now: Instant) -> ProbeEvent {
        let slot = &mut self.slots[done.idx];
        slot.in_flight = slot.in_flight.saturating_sub(1);
        let transition = slot.tracker.observe(done.outcome.up, now);
        let event = ProbeEvent {
            id: slot.id,
            target: done.target,
            outcome: done.outcome,
            started: done.started,
            finished: now,
            skipped_slots: done.skipped,
            tracker: slot.tracker.clone(),
            transition,
        };
        if !slot.queued {
            self.schedule(done.idx);
        }
        event
    }

    /// Arms the target's timer for its next due time, unless it is already armed for exactly
    /// that time.
    fn schedule(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        let due = slot.due();
        if slot.scheduled == Some(due) {
            return;
        }
        slot.generation = slot.generation.wrapping_add(1);
        slot.scheduled = Some(due);
        self.heap.push(Reverse((due, idx, slot.generation)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::outcome::{FailureKind, ProbeError};

    const MS: Duration = Duration::from_millis(1);

    fn opts() -> ScheduleOptions {
        ScheduleOptions {
            interval: 1000 * MS,
            fast_interval: 100 * MS,
            jitter: 0.0,
            timeout: 500 * MS,
        }
    }

    fn table(t0: Instant, tracker: HealthTracker) -> Timetable {
        Timetable::new(vec![SlotInit {
            id: TargetId(0),
            target: Target::new("s", "a", "127.0.0.1".parse().unwrap(), 1),
            check: Arc::new(Check::tcp()),
            tracker,
            opts: opts(),
            first: t0,
        }])
    }

    fn done(l: Launch, up: bool) -> Done {
        let outcome = if up {
            ProbeOutcome::up(MS)
        } else {
            ProbeOutcome::down(MS, ProbeError::new(FailureKind::Refused, "refused"))
        };
        Done {
            idx: l.idx,
            target: l.target,
            started: l.started,
            skipped: l.skipped,
            outcome,
        }
    }

    /// Pops and starts whatever is due at `at`.
    fn tick(t: &mut Timetable, at: Instant) -> Vec<Launch> {
        t.pop_due(at);
        std::iter::from_fn(|| t.start_next(at)).collect()
    }

    #[test]
    fn grid_skips_to_the_first_slot_after_now() {
        let t0 = Instant::now();
        let i = 1000 * MS;
        assert_eq!(next_slot_after(t0 + i, i, t0), t0 + i);
        assert_eq!(next_slot_after(t0, i, t0), t0 + i);
        assert_eq!(next_slot_after(t0, i, t0 + 2500 * MS), t0 + 3000 * MS);
        assert_eq!(next_slot_after(t0, i, t0 + 3000 * MS), t0 + 4000 * MS);
    }

    #[test]
    fn healthy_target_is_probed_once_per_interval() {
        let t0 = Instant::now();
        let mut t = table(t0, HealthTracker::restore(2, 3, Health::Up, None));
        for k in 0..5u32 {
            let at = t0 + opts().interval * k;
            let mut started = tick(&mut t, at);
            assert_eq!(started.len(), 1, "round {k}");
            t.complete(done(started.remove(0), true), at + MS);
            // The timer armed while the probe was pending is stale now.
            assert_eq!(t.next_deadline(), Some(at + opts().interval));
        }
    }

    #[test]
    fn pending_probe_of_an_up_target_brings_confirmations() {
        let t0 = Instant::now();
        let mut t = table(t0, HealthTracker::restore(2, 3, Health::Up, None));
        assert_eq!(tick(&mut t, t0).len(), 1);
        assert_eq!(tick(&mut t, t0 + 100 * MS).len(), 1);
        assert_eq!(tick(&mut t, t0 + 200 * MS).len(), 1);
        // `fall` probes in flight: no more until one finishes.
        assert!(tick(&mut t, t0 + 300 * MS).is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + 1000 * MS));
    }

    #[test]
    fn down_target_does_not_overlap_without_doubt() {
        let t0 = Instant::now();
        let mut t = table(t0, HealthTracker::restore(2, 3, Health::Down, None));
        assert_eq!(tick(&mut t, t0).len(), 1);
        assert!(tick(&mut t, t0 + 100 * MS).is_empty());
        // Still pending at the next slot: that slot is skipped.
        assert!(tick(&mut t, t0 + 1000 * MS).is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + 2000 * MS));
    }

    #[test]
    fn failures_are_confirmed_fast_interval_apart() {
        let t0 = Instant::now();
        let mut t = table(t0, HealthTracker::restore(2, 3, Health::Up, None));
        let mut at = t0;
        let mut transition = None;
        for _ in 0..3 {
            let mut started = tick(&mut t, at);
            assert_eq!(started.len(), 1);
            transition = t.complete(done(started.remove(0), false), at).transition;
            at += 100 * MS;
        }
        assert_eq!(
            transition.map(|tr| (tr.to, tr.at)),
            Some((Health::Down, t0 + 200 * MS))
        );
        assert_eq!(t.next_deadline(), Some(t0 + 1000 * MS));
    }
}
