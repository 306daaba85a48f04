//! The probe scheduler: probes every target on its interval, re-probes targets in doubt every
//! `fast_interval`, feeds each result to the target's [`HealthTracker`] and reports it as a
//! [`ProbeEvent`] (SPEC §5.1, §5.2).
//!
//! # Timing rules
//!
//! For a target with [`ScheduleOptions`] `interval` *I*, `fast_interval` *F*, `jitter` *j* and
//! `timeout` *T*, and `rise`/`fall` from its tracker:
//!
//! 1. **Phase.** The window `[0, j·I)` is cut into `N` equal strata, one per target that is
//!    probed (every check but [`Check::Static`]); the strata are dealt to the targets in a random
//!    order, and each target's phase `φ` is a uniform point in its stratum. So the first round
//!    starts within `j·I` of [`run`](Scheduler::run) (the daemon's readiness and fail-safe wait
//!    for it), any stretch of `w` holds at most about `w·N / (j·I) + 1` first probes (no burst),
//!    and any stretch holds every service's targets in proportion (rule 7).
//! 2. **Regular probes** fall due on a fixed grid, `t0 + φ + k·I` (`t0` = start of `run`). The
//!    grid never drifts: slow probes, confirmations and waiting for a permit do not move it. A
//!    slot that passes while the target waits for a permit, or that comes while the target has
//!    its limit of probes in flight (rule 4), is skipped, not made up later.
//! 3. **Doubt.** A target is in doubt when its last result disagrees with its state
//!    ([`HealthTracker::in_doubt`]) *or* it is up and a probe of it is pending. While in doubt, a
//!    confirming probe falls due `F` after the start of its latest probe, whether or not that
//!    one has finished. For a target that starts refusing, the confirmations thus follow each
//!    other `F` apart; for one that starts dropping packets, a new probe starts every `F` while
//!    the first is still hanging ("a pending probe older than `fast_interval` counts as
//!    doubt"), instead of one after another.
//! 4. **Limit per target.** At most `fall` probes of an up target in doubt are in flight, at
//!    most `rise` of a down target in doubt, otherwise one (an unknown target's first probe, a
//!    down target that keeps failing, an up target that keeps passing).
//! 5. **Results count once each, in completion order**, at the time they arrive. A probe that
//!    started earlier but finishes later than another still counts: every probe is a real
//!    observation, dropping one would hide packet loss, and the rise/fall rule already keeps a
//!    single late result from turning a state.
//! 6. **Concurrency.** At most `concurrency` probes are in flight over all targets. A probe that
//!    falls due without a free permit waits in a queue and starts the moment one frees (in the
//!    order of rule 7); a hanging target holds one permit until its timeout and never delays the
//!    others.
//! 7. **Fair under overload.** The queue of rule 6 is ordered by when each target *ought* to be
//!    probed judged by its latest probe: its latest start plus `I` (plus `F` for a confirmation;
//!    its first slot before any probe), earliest first. When the probes cannot keep up, a target
//!    whose slot was skipped last round is thus first in line this round, and every target (and
//!    so every service) loses about the same share of its slots; a first-in-first-out queue
//!    would serve the targets early in the window first every round and skip the same late ones
//!    over and over. Each skipped slot is reported in [`ProbeEvent::skipped_slots`] of the
//!    target's next probe, so the receiver can count it and say which setting to raise.
//!
//! Hence, from the moment a backend breaks: one that refuses is down within
//! `I + (fall−1)·F` (plus its probes' latency); one that drops packets within
//! `I + T + (fall−1)·F`, the confirmations overlapping the first timeout. A backend that comes
//! back is up within `I + (rise−1)·F`. With HAProxy's `inter 2s fall 3` and `fastinter 200ms`,
//! a 3 s timeout, that is 2.4 s and 5.4 s against HAProxy's 4.5–6 s and 10.5–12 s (SPEC §11).
//!
//! A healthy target whose probes take longer than `F` is "pending" often enough to get up to
//! `fall` probes per interval; set `fast_interval` above the normal probe latency.
//!
//! # Cold start and static checks
//!
//! A tracker made with [`HealthTracker::new`] lets the first result decide; one made with
//! [`HealthTracker::restore`] (state from the store) continues with rise and fall. A target whose
//! check is [`Check::Static`] is never probed: it gets one event, an up outcome of zero latency
//! at the start of `run`, and nothing after.
//!
//! # Events and state
//!
//! Every result is sent as a [`ProbeEvent`] that carries a copy of the tracker after the result,
//! so the receiver (the daemon) keeps the table of current state that `/status`, the reconciler
//! and the fail-safe read; the scheduler shares no table, which keeps the probing path free of
//! locks. Events are `try_send`; when the channel is full they queue in the shard (finished
//! probes are still collected, so latencies stay honest) and, once a channel's worth is queued,
//! no new probe starts until the receiver catches up: backpressure, bounded memory. When the
//! receiver is dropped, `run` returns.
//!
//! # How it runs
//!
//! One shard per runtime worker thread (as in [`Prober`]'s rounds), each a single task owning a
//! share of the targets: a binary heap of due times driven by one `sleep_until`, its probes in
//! flight and its queue of events. Permits come from one semaphore shared by the shards. Nothing
//! is logged per probe. On a current-thread runtime (and so under
//! `#[tokio::test(start_paused = true)]`) the one shard runs inside `run` itself.
//!
//! Probes in flight are of two kinds. Plain TCP connect checks, the check most targets use
//! ([`Probe::plain_connect`]), run in the shard's own connector on Linux: a non-blocking
//! `connect` on a socket used again and again, in an epoll instance of the shard's registered
//! once with the runtime, with the timeouts kept by the shard's timer. Nothing is allocated, and
//! no socket made or closed, per probe, and the runtime sees none of it (issue 15; BENCHMARKS.md).
//! Every other probe is a future of the [`Probe`] in a `FuturesUnordered`, whose slot is its one
//! allocation.

#[cfg(target_os = "linux")]
mod connector;
#[cfg(not(target_os = "linux"))]
#[path = "no_connector.rs"]
mod connector;
mod probe;
mod shard;
mod timetable;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::seq::SliceRandom;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::probe::{Probe, ProbeFn, probe_fn};
use self::timetable::{SlotInit, Timetable};
use crate::check::Check;
use crate::health::{Health, HealthTracker, Transition};
use crate::outcome::ProbeOutcome;
use crate::prober::{Prober, ProberOptions};
use crate::target::Target;

/// Shortest `interval` and `fast_interval` (shorter ones are raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Longest `interval`, `fast_interval` and `timeout` (longer ones are lowered to it), so that
/// instants stay far from overflowing.
pub const MAX_INTERVAL: Duration = Duration::from_secs(365 * 86_400);

/// How one target is scheduled (the config's `interval`, `fast_interval`, `jitter` and
/// `pingtimeout`, per service).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleOptions {
    /// Time between regular probes of the target.
    pub interval: Duration,
    /// Time between confirming probes while the target is in doubt (HAProxy's `fastinter`).
    pub fast_interval: Duration,
    /// Fraction of `interval` over which the targets' phases are spread, `0.0..=1.0` (values
    /// outside are clamped, `NaN` is 0). The first round starts within `jitter × interval`.
    pub jitter: f64,
    /// Timeout of one probe, handed to the [`Probe`] (exec checks keep their own).
    pub timeout: Duration,
}

impl Default for ScheduleOptions {
    /// The reference configuration's `interval: 2000` and `pingtimeout: 3000`, with
    /// `fast_interval: 200` and `jitter: 0.1`.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(200),
            jitter: 0.1,
            timeout: Duration::from_secs(3),
        }
    }
}

impl ScheduleOptions {
    /// The options as the scheduler applies them: intervals within
    /// [`MIN_INTERVAL`]`..=`[`MAX_INTERVAL`], `jitter` within `0.0..=1.0`, `timeout` at most
    /// [`MAX_INTERVAL`].
    pub fn sanitized(self) -> Self {
        Self {
            interval: self.interval.clamp(MIN_INTERVAL, MAX_INTERVAL),
            fast_interval: self.fast_interval.clamp(MIN_INTERVAL, MAX_INTERVAL),
            jitter: if self.jitter.is_finite() {
                self.jitter.clamp(0.0, 1.0)
            } else {
                0.0
            },
            timeout: self.timeout.min(MAX_INTERVAL),
        }
    }
}

/// Identifies a target of one [`Scheduler`]: `0, 1, 2, …` in the order of [`Scheduler::add`], so
/// a receiver can keep its per-target state in a `Vec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(usize);

impl TargetId {
    /// The position of the target in the order it was added.
    pub fn index(self) -> usize {
        self.0
    }
}

/// One probe result, with what it did to the target's health.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    /// Which target, as returned by [`Scheduler::add`].
    pub id: TargetId,
    /// The target itself.
    pub target: Target,
    /// What the probe found.
    pub outcome: ProbeOutcome,
    /// When the probe started.
    pub started: Instant,
    /// When the result was fed to the tracker.
    pub finished: Instant,
    /// Regular slots of this target that passed while this probe waited for a permit, and so
    /// were skipped (rule 2): non-zero only when probes cannot keep up (rule 7).
    pub skipped_slots: u32,
    /// The target's tracker after this result: state, consecutive counts, `since`, rise, fall.
    pub tracker: HealthTracker,
    /// The transition this result caused, if any (an event to log, count, store and notify).
    pub transition: Option<Transition>,
}

impl ProbeEvent {
    /// The target's health after this result.
    pub fn health(&self) -> Health {
        self.tracker.state()
    }
}

struct Entry {
    target: Target,
    check: Arc<Check>,
    tracker: HealthTracker,
    opts: ScheduleOptions,
}

/// Probes a fixed set of targets on their intervals until shut down; see the
/// [module docs](self) for the exact timing rules.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use probe_core::{Check, HealthTracker, ScheduleOptions, Scheduler, Target};
/// use tokio::sync::mpsc;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let check = Arc::new(Check::tcp());
/// let mut scheduler = Scheduler::new(1024);
/// for (i, port) in [6379, 6380, 6381].into_iter().enumerate() {
///     let target = Target::new("redis", format!("node-{i}"), "127.0.0.1".parse()?, port);
///     // A cold start: the first result decides.
///     let tracker = HealthTracker::new(2, 3);
///     scheduler.add(target, Arc::clone(&check), tracker, ScheduleOptions::default());
/// }
///
/// let (tx, mut rx) = mpsc::channel(1024);
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let probing = tokio::spawn(scheduler.run(tx, async {
///     let _ = stopped.await;
/// }));
/// while let Some(event) = rx.recv().await {
///     if let Some(t) = event.transition {
///         println!("{}: {} -> {}", event.target, t.from, t.to);
///     }
/// #   break;
/// }
/// let _ = stop.send(());
/// probing.await?;
/// # Ok(())
/// # }
/// ```
pub struct Scheduler<P = Prober> {
    probe: Arc<P>,
    concurrency: usize,
    entries: Vec<Entry>,
}

impl Scheduler<Prober> {
    /// A scheduler with the real probes ([`Prober`]) and at most `concurrency` in flight (cap it
    /// with [`effective_concurrency`](crate::effective_concurrency) first; 0 is read as 1).
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.clamp(1, Semaphore::MAX_PERMITS);
        let prober = Prober::new(ProberOptions {
            concurrency,
            ..ProberOptions::default()
        });
        Self::with_probe(concurrency, prober)
    }
}

impl<P: Probe> Scheduler<P> {
    /// A scheduler whose probes are run by `probe` (a [`Prober`] shared with other users, or a
    /// fake in tests), at most `concurrency` at a time (0 is read as 1).
    pub fn with_probe(concurrency: usize, probe: P) -> Self {
        Self {
            probe: Arc::new(probe),
            concurrency: concurrency.clamp(1, Semaphore::MAX_PERMITS),
            entries: Vec::new(),
        }
    }

    /// Adds a target, probed with `check` on `opts` (see [`ScheduleOptions::sanitized`]).
    /// `tracker` is [`HealthTracker::new`] for a cold start, or [`HealthTracker::restore`] with
    /// the state from the store (SPEC §5.2).
    pub fn add(
        &mut self,
        target: Target,
        check: Arc<Check>,
        tracker: HealthTracker,
        opts: ScheduleOptions,
    ) -> TargetId {
        let id = TargetId(self.entries.len());
        self.entries.push(Entry {
            target,
            check,
            tracker,
            opts: opts.sanitized(),
        });
        id
    }

    /// How many targets were added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no target was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most probes in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Probes until `shutdown` resolves (or the receiver of `events` is dropped), sending every
    /// result to `events`.
    ///
    /// On shutdown no further probe starts, the probes in flight are cancelled (dropped: sockets
    /// closed, exec checks killed) and `run` returns without sending their results. A panic in a
    /// probe is propagated.
    pub async fn run(self, events: mpsc::Sender<ProbeEvent>, shutdown: impl Future<Output = ()>) {
        let workers = tokio::runtime::Handle::try_current()
            .map(|h| h.metrics().num_workers())
            .unwrap_or(1);
        let shards = workers.min(self.concurrency).min(self.entries.len()).max(1);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tables = timetables(self.entries, shards, Instant::now());

        if tables.len() == 1 {
            let Some(table) = tables.pop() else { return };
            let shard = shard::run(table, self.probe, permits, events);
            tokio::select! {
                () = shard => {}
                () = shutdown => {}
            }
            return;
        }

        let mut set = JoinSet::new();
        for table in tables {
            let probe = Arc::clone(&self.probe);
            set.spawn(shard::run(
                table,
                probe,
                Arc::clone(&permits),
                events.clone(),
            ));
        }
        drop(events);
        let panicked = tokio::select! {
            () = shutdown => None,
            panicked = async {
                while let Some(joined) = set.join_next().await {
                    if let Err(e) = joined
                        && e.is_panic()
                    {
                        return Some(e.into_panic());
                    }
                }
                None
            } => panicked,
        };
        set.shutdown().await;
        if let Some(panic) = panicked {
            std::panic::resume_unwind(panic);
        }
    }
}

impl<P> fmt::Debug for Scheduler<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("targets", &self.entries.len())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Deals the targets round-robin to `shards` timetables, with their phases (rule 1 of the module
/// docs) counted from `t0`.
fn timetables(entries: Vec<Entry>, shards: usize, t0: Instant) -> Vec<Timetable> {
    let probed = entries
        .iter()
        .filter(|e| !matches!(*e.check, Check::Static))
        .count()
        .max(1);
    let mut rng = rand::rng();
    // Strata in a random order, so that any stretch of the window holds every service's targets
    // in proportion (rule 7).
    let mut strata: Vec<usize> = (0..probed).collect();
    strata.shuffle(&mut rng);
    let mut strata = strata.into_iter();
    let mut inits: Vec<Vec<SlotInit>> = (0..shards).map(|_| Vec::new()).collect();
    for (i, entry) in entries.into_iter().enumerate() {
        let phase = if matches!(*entry.check, Check::Static) {
            Duration::ZERO
        } else {
            let window = entry.opts.interval.mul_f64(entry.opts.jitter);
            let rank = strata.next().unwrap_or(0);
            let stratum = (rank as f64 + rng.random::<f64>()) / probed as f64;
            window.mul_f64(stratum.min(1.0))
        };
        let init = SlotInit {
            id: TargetId(i),
            target: entry.target,
            check: entry.check,
            tracker: entry.tracker,
            opts: entry.opts,
            first: t0 + phase,
        };
        if let Some(shard) = inits.get_mut(i % shards.max(1)) {
            shard.push(init);
        }
    }
    inits.into_iter().map(Timetable::new).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn options_are_sanitized() {
        let wild = ScheduleOptions {
            interval: Duration::ZERO,
            fast_interval: Duration::MAX,
            jitter: f64::NAN,
            timeout: Duration::MAX,
        }
        .sanitized();
        assert_eq!(
            (wild.interval, wild.fast_interval, wild.jitter, wild.timeout),
            (MIN_INTERVAL, MAX_INTERVAL, 0.0, MAX_INTERVAL)
        );
        let over = ScheduleOptions {
            jitter: 7.0,
            ..ScheduleOptions::default()
        };
        assert_eq!(over.sanitized().jitter, 1.0);
        let fine = ScheduleOptions::default();
        assert_eq!(fine.sanitized(), fine);
    }

    #[test]
    fn phases_fill_every_stratum_and_shards_are_dealt_round_robin() {
        let opts = ScheduleOptions {
            interval: Duration::from_secs(1),
            jitter: 0.5,
            ..ScheduleOptions::default()
        };
        let check = Arc::new(Check::tcp());
        let entries: Vec<_> = (0..10u16)
            .map(|i| Entry {
                target: Target::new("s", format!("n{i}"), "127.0.0.1".parse().unwrap(), i),
                check: if i == 3 {
                    Arc::new(Check::Static)
                } else {
                    Arc::clone(&check)
                },
                tracker: HealthTracker::new(2, 3),
                opts,
            })
            .collect();
        let t0 = Instant::now();
        let mut tables = timetables(entries, 2, t0);
        assert_eq!(tables.len(), 2);
        // Nine probed targets over a 500 ms window: one per 55.5 ms stratum, in a random order.
        let mut firsts: Vec<_> = tables.iter_mut().flat_map(Timetable::firsts).collect();
        firsts.sort();
        let mut ids: Vec<_> = firsts.iter().map(|(_, id)| id.index()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
        let stratum = Duration::from_secs(1).mul_f64(0.5) / 9;
        for (rank, (first, _)) in firsts.iter().enumerate() {
            let phase = *first - t0;
            let rank = u32::try_from(rank).unwrap();
            assert!(
                phase >= stratum * rank && phase < stratum * (rank + 1),
                "{rank}"
            );
        }
    }
}
