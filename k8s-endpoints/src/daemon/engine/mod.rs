//! The daemon's loop: one task owns all state; probes, reconciles and store writes run beside it.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use probe_core::backoff::{Backoff, Jitter, RetryPolicy};
use probe_core::{Check, Health, ProbeEvent, ScheduleOptions, Scheduler, Target};
use state_store::{AppliedRecord, StateStore, TransitionEvent};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use super::observe::{ConsensusReport, Observer, TargetRef};
use super::outage::{ApiOutage, OutageLog};
use super::persist::{Persister, Write};
use super::table::{ServiceSlot, Tables, TargetSlot, stored};
use super::{DaemonOptions, DaemonSpec};
use crate::Client;
use crate::client::{ReconcileMode, RetryDecision, classify};
use crate::election::LeaderState;
use crate::writer::{ServerPolicy, WriteOutcome};
use probe_core::failsafe::FailSafe;

pub(crate) mod consensus;
mod events;
mod ownership;
mod report;
mod witness;

use consensus::Vote;
use witness::Witnesses;

use crate::consensus::Verdict;

/// Most reconciles in flight at once: at start-up and at each resync every service is due at
/// the same moment, and a hundred services must not become a hundred parallel requests (and
/// connections) to the ApiServer.
const MAX_RECONCILES: usize = 16;

/// Most probe results handled per wake-up of the daemon's loop.
const EVENT_BATCH: usize = 256;

/// A failed reconcile is retried after a wait between half and all of `500 ms × 2ⁿ` for its
/// `n`th consecutive failure (`n` ≤ 10), capped at the daemon's `max_retry_delay`.
const RECONCILE_RETRY_BASE: Duration = Duration::from_millis(500);

/// While the ApiServer is unavailable, how often one reconcile tests it (±20 %).
const OUTAGE_TEST_EVERY: Duration = Duration::from_secs(1);

/// The longest `/status` lags behind the daemon's state.
const STATUS_EVERY: Duration = Duration::from_millis(100);

/// What the daemon reports to and takes leadership from.
pub(super) struct Wiring {
    pub(super) observers: Arc<dyn Observer>,
    pub(super) leadership: watch::Receiver<LeaderState>,
    pub(super) identity: Option<String>,
    pub(super) consensus: Option<consensus::Link>,
}

/// The result of one reconcile task.
struct Done {
    service: usize,
    ready: Vec<IpAddr>,
    not_ready: Vec<IpAddr>,
    result: Result<WriteOutcome, crate::Error>,
}

/// How far the first probe cycle is.
struct FirstCycle {
    /// Until then, a service with targets still unknown waits for their first probe.
    deadline: Instant,
    /// Every service's targets have a known state (the first probe cycle is done).
    done: bool,
    /// Targets whose state is still unknown (kept so no event scans every target).
    unknown: usize,
}

/// The daemon's state and loop.
pub struct Engine {
    spec: DaemonSpec,
    options: DaemonOptions,
    client: Client,
    persister: Persister,
    persist_task: tokio::task::JoinHandle<()>,
    scheduler: Option<Scheduler>,
    targets: Vec<TargetSlot>,
    services: Vec<ServiceSlot>,
    failsafe: FailSafe,
    holding: bool,
    /// Scheduler id of the canary, if one is configured.
    canary: Option<usize>,
    /// The first probe cycle: how far it is, and how long a service waits for it.
    first_cycle: FirstCycle,
    reconciles: JoinSet<Done>,
    /// Out-of-schedule probes of healthy targets that confirm a removal quickly.
    witness: Witnesses,
    observers: Arc<dyn Observer>,
    /// Whether this replica may write (always, without an election).
    leadership: watch::Receiver<LeaderState>,
    /// This replica's election identity, for the status document.
    identity: Option<String>,
    /// Services with a removal that waits for proof that the network works.
    awaiting: usize,
    /// `/status` is out of date; it is published at most every [`STATUS_EVERY`] (building it
    /// costs a walk over every target, too much for every transition of a large config).
    status_dirty: bool,
    /// The ApiServer's availability, so that an outage is logged by its changes and its
    /// requests are budgeted.
    outage: ApiOutage,
    /// During an outage, when the next test reconcile may start.
    outage_test_at: Instant,
    /// What is logged by event rather than line by line.
    logs: events::Logs,
    /// The store outlives this process, so target records are worth saving
    /// ([`StateStore::durable`]).
    durable: bool,
    /// Multi-vantage consensus, when it is on.
    consensus: Option<consensus::Link>,
}

impl Engine {
    /// Builds the state: restores recent health from the store (so a restart does not flap),
    /// checks the cluster version for the `not_ready` policy, and prepares the scheduler.
    pub(super) async fn start(
        mut spec: DaemonSpec,
        store: Arc<dyn StateStore>,
        client: Client,
        options: DaemonOptions,
        wiring: Wiring,
    ) -> Engine {
        let Wiring {
            observers,
            leadership,
            identity,
            consensus,
        } = wiring;
        let server = ServerPolicy::read(&client).await;
        let mut scheduler = Scheduler::new(spec.concurrency);
        let now = Instant::now();
        let Tables {
            targets,
            services,
            started,
            probed,
        } = Tables::build(&spec, store.as_ref(), server, &mut scheduler, now).await;
        let canary = add_canary(&spec, &mut scheduler);
        // The tables above hold the targets from here on; the spec keeps the settings.
        for svc in &mut spec.services {
            svc.targets = Vec::new();
        }
        let durable = store.durable();
        let (persister, persist_task) = Persister::spawn(store, observers.clone());
        let first_cycle_deadline =
            now + spec.interval.mul_f64(1.0 + spec.jitter) + spec.timeout + Duration::from_secs(1);
        let witness = Witnesses::new(spec.timeout);
        let failsafe = FailSafe::new(spec.failsafe.hold, spec.failsafe.min_targets, probed);
        tracing::info!(
            services = services.len(),
            targets = targets.len(),
            interval_ms = spec.interval.as_millis() as u64,
            "epcheck started"
        );
        // Restored state is not news: observers record it without notifying.
        observers.started(&started);
        let unknown = targets
            .iter()
            .filter(|t| t.health == Health::Unknown)
            .count();
        let first_round = events::FirstRound::new(services.iter().map(|s| {
            s.targets
                .iter()
                .filter(|&&i| targets.get(i).is_some_and(|t| t.health == Health::Unknown))
                .count()
        }));
        let bursts = events::Bursts::new(services.len());
        let services_count = services.len();
        Engine {
            spec,
            options,
            client,
            persister,
            persist_task,
            scheduler: Some(scheduler),
            targets,
            services,
            failsafe,
            holding: false,
            canary,
            first_cycle: FirstCycle {
                deadline: first_cycle_deadline,
                done: false,
                unknown,
            },
            reconciles: JoinSet::new(),
            witness,
            observers,
            leadership,
            identity,
            awaiting: 0,
            status_dirty: false,
            outage: ApiOutage::default(),
            outage_test_at: now,
            logs: events::Logs {
                first_round,
                bursts,
                skips: events::Skips::default(),
                start_writes: events::StartWrites::new(services_count),
            },
            durable,
            consensus,
        }
    }

    /// Runs until `shutdown` resolves, then drains.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let (event_tx, mut events) = mpsc::channel::<ProbeEvent>(4096);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let scheduler_task = self.scheduler.take().map(|s| {
            tokio::spawn(s.run(event_tx, async move {
                let _ = stop_rx.await;
            }))
        });
        let mut resync = tokio::time::interval(self.spec.resync_interval);
        resync.tick().await;
        let mut flush = tokio::time::interval(self.options.flush_interval);
        flush.tick().await;
        let mut status = tokio::time::interval(STATUS_EVERY);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.publish_status();
        tokio::pin!(shutdown);
        // Results are taken in batches: one wake-up of this task per batch, not per probe.
        let mut batch = Vec::with_capacity(EVENT_BATCH);
        let mut probing = true;
        loop {
            let next = self.next_due();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                n = events.recv_many(&mut batch, EVENT_BATCH), if probing => {
                    // 0: the scheduler is gone (it only stops on shutdown).
                    probing = n > 0;
                    for ev in batch.drain(..) {
                        self.on_probe(ev);
                    }
                }
                Some((slot, started, ok)) = self.witness.rx.recv() => self.on_witness(slot, started, ok),
                Ok(()) = self.leadership.changed() => self.on_leadership(),
                () = consensus::Link::changed(&mut self.consensus) => self.on_views(),
                Some(done) = self.reconciles.join_next(), if !self.reconciles.is_empty() => match done {
                    Ok(done) => self.on_done(done),
                    // Cancelled on purpose (leadership lost, fail-safe engaged).
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => tracing::error!(error = %e, "a reconcile task failed"),
                },
                () = sleep_until(next) => self.start_due(),
                _ = resync.tick() => self.resync(),
                _ = flush.tick() => {
                    self.flush();
                    let services = &self.services;
                    self.logs.bursts.flush(Instant::now(), |i| {
                        services.get(i).map(|s| s.key.clone()).unwrap_or_default()
                    });
                    self.publish_status();
                }
                _ = status.tick(), if self.status_dirty => self.publish_status(),
            }
        }
        tracing::info!("shutting down: probing stopped, finishing in-flight writes");
        let _ = stop_tx.send(());
        if let Some(task) = scheduler_task {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        let deadline = Instant::now() + self.options.shutdown_grace;
        while !self.reconciles.is_empty() {
            match tokio::time::timeout_at(deadline, self.reconciles.join_next()).await {
                Ok(Some(Ok(done))) => self.on_done(done),
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("shutdown grace over: abandoning an in-flight write");
                    self.reconciles.abort_all();
                    break;
                }
            }
        }
        self.flush();
        let Engine {
            persister,
            persist_task,
            ..
        } = self;
        drop(persister);
        let _ = tokio::time::timeout(Duration::from_millis(500), persist_task).await;
        tracing::info!("epcheck stopped");
    }

    /// Leadership changed: a new leader resyncs at once; a replica that lost it stops writing
    /// at once (in-flight writes are cancelled — the election ends a term well before another
    /// replica may take over, so no two replicas write at the same time).
    fn on_leadership(&mut self) {
        let state = self.leadership.borrow_and_update().clone();
        self.observers.leadership(&state);
        if state.is_leader {
            tracing::info!("this replica leads: resyncing every service now");
            self.resync();
        } else {
            self.cancel_in_flight("leadership lost");
            tracing::info!(
                leader = state.leader.as_deref().unwrap_or("none"),
                "following"
            );
        }
        self.publish_status();
    }

    /// The agent has read new views: every service is decided again.
    fn on_views(&mut self) {
        let Some(link) = self.consensus.as_mut() else {
            return;
        };
        link.take_views();
        for i in 0..self.services.len() {
            self.mark_dirty(i);
        }
        // The status (and with it the consensus report) follows within STATUS_EVERY.
        self.status_dirty = true;
    }

    /// Why this replica's view abstains, if it does: it is starting, or its fail-safe holds.
    fn abstaining(&self) -> Option<&'static str> {
        if !self.first_cycle.done {
            Some("starting: the first probe cycle is not done")
        } else if self.holding {
            Some(
                "fail-safe active: every probe fails, so this replica's own network is the likelier fault",
            )
        } else {
            None
        }
    }

    /// Tells the observers how the views stand (on the leader, which reads them).
    pub(super) fn report_consensus(&self) {
        let Some(link) = &self.consensus else {
            return;
        };
        if !self.leadership.borrow().is_leader {
            return;
        }
        let abstaining = self.abstaining().is_some();
        let disagreements = self
            .services
            .iter()
            .map(|s| {
                s.targets
                    .iter()
                    .filter_map(|&i| self.targets.get(i))
                    .filter(|t| {
                        link.tally(&s.key, t.target.ip, Vote::of(t.health, abstaining))
                            .disagrees()
                    })
                    .count()
            })
            .collect();
        let (fresh, abstain, stale) = link.counts(abstaining);
        self.observers.consensus(&ConsensusReport {
            fresh,
            abstaining: abstain,
            stale,
            holding: link.hold_reason().is_some(),
            disagreements,
        });
    }

    /// Hands this replica's view to the consensus agent (it publishes only changes).
    fn publish_view(&self) {
        let Some(link) = &self.consensus else {
            return;
        };
        let abstain = self.abstaining().map(str::to_owned);
        let mut down = std::collections::BTreeMap::new();
        if abstain.is_none() {
            for s in &self.services {
                let ips: BTreeSet<IpAddr> = s
                    .targets
                    .iter()
                    .filter_map(|&i| self.targets.get(i))
                    .filter(|t| t.health == Health::Down)
                    .map(|t| t.target.ip)
                    .collect();
                down.insert(s.key.clone(), ips);
            }
        }
        link.publish(abstain, down);
    }

    /// With consensus, tells the observers which targets a write moved in or out of the
    /// ready set, and by how many votes.
    fn report_decisions(&self, service: usize, before: &[IpAddr], after: &[IpAddr]) {
        let (Some(link), Some(s)) = (&self.consensus, self.services.get(service)) else {
            return;
        };
        let abstaining = self.abstaining().is_some();
        for &index in &s.targets {
            let Some(slot) = self.targets.get(index) else {
                continue;
            };
            let ip = slot.target.ip;
            let (was, is) = (before.contains(&ip), after.contains(&ip));
            if was == is {
                continue;
            }
            let tally = link.tally(&s.key, ip, Vote::of(slot.health, abstaining));
            if is {
                tracing::info!(service = %s.key, target = %slot.target.name, addr = %slot.target.addr(), agreement = %tally.agreement(), "consensus: target written ready");
            } else {
                tracing::warn!(service = %s.key, target = %slot.target.name, addr = %slot.target.addr(), agreement = %tally.agreement(), "consensus: target removed from the ready set");
            }
            self.observers.decided(
                TargetRef {
                    index,
                    service,
                    target: &slot.target,
                },
                is,
                &tally,
            );
        }
    }

    /// Whether this replica may start a write now.
    fn leads(&self) -> bool {
        self.leadership.borrow().leads_at(Instant::now())
    }

    /// The earliest time a dirty service may be reconciled.
    fn next_due(&self) -> Instant {
        let later = Instant::now() + Duration::from_secs(3600);
        let outage = self.outage.is_active();
        if self.reconciles.len() >= MAX_RECONCILES || (outage && !self.reconciles.is_empty()) {
            // Full (or testing an unavailable ApiServer): a finished reconcile wakes the loop.
            return later;
        }
        let due = self
            .services
            .iter()
            .filter(|s| s.dirty && !s.in_flight)
            .map(|s| s.due)
            .min()
            .unwrap_or(later);
        if outage && due < later {
            // The next test goes at its time, whatever the services' own backoffs say.
            self.outage_test_at
        } else {
            due
        }
    }

    fn on_probe(&mut self, ev: ProbeEvent) {
        let id = ev.id.index();
        if Some(id) == self.canary {
            self.failsafe.observe_canary(ev.outcome.up);
            self.update_hold();
            return;
        }
        let Some(slot) = self.targets.get_mut(id) else {
            return;
        };
        let was_unknown = slot.health == Health::Unknown;
        let success = ev.outcome.up;
        if ev.skipped_slots > 0 {
            self.observers.slots_skipped(slot.service, ev.skipped_slots);
            if let Some(skipped) = self.logs.skips.record(ev.skipped_slots, Instant::now()) {
                tracing::warn!(
                    skipped,
                    concurrency = self.spec.concurrency,
                    interval_ms = self.spec.interval.as_millis() as u64,
                    "probes do not keep up: {skipped} regular probe slots were skipped (since the \
                     last such warning) because no probe started before the next slot; every \
                     service loses about the same share. Raise probe.concurrency or the interval, \
                     or, when the process uses a whole CPU, give it more threads (`epcheck run \
                     --threads`) (epcheck_probe_slots_skipped_total counts them per service)"
                );
            }
        }
        self.observers.probed(
            TargetRef {
                index: id,
                service: slot.service,
                target: &slot.target,
            },
            &ev.outcome,
        );
        slot.last_probe = Some(SystemTime::now());
        slot.last_error = ev.outcome.error.as_ref().map(|e| e.to_string());
        // The tracker counts; the slot keeps its counts for the store and `/status`.
        slot.successes = ev.tracker.consecutive_successes();
        slot.failures = ev.tracker.consecutive_failures();
        if success {
            slot.failing_since = None;
        } else if slot.failing_since.is_none() {
            slot.failing_since = Some(ev.started);
        }
        if let Some(i) = slot.failsafe_index {
            self.failsafe.observe(i, success, ev.started);
        }
        let service = slot.service;
        if let Some(t) = ev.transition {
            slot.health = t.to;
            slot.since = SystemTime::now();
            self.observers.transition(
                TargetRef {
                    index: id,
                    service: slot.service,
                    target: &slot.target,
                },
                &t,
                slot.last_error.as_deref(),
            );
            let slot = slot.clone();
            self.on_transition(&slot, t.from);
            if t.to == Health::Down
                && slot
                    .failing_since
                    .is_some_and(|f| !self.failsafe.removal_confirmed(f))
            {
                self.probe_witnesses(id);
            }
            self.mark_dirty(service);
            self.update_service_gauges(service);
            self.status_dirty = true;
        } else if slot.health == Health::Unknown && ev.health() != Health::Unknown {
            slot.health = ev.health();
            self.observers.health(
                TargetRef {
                    index: id,
                    service: slot.service,
                    target: &slot.target,
                },
                slot.health,
            );
            self.mark_dirty(service);
        }
        if was_unknown
            && self
                .targets
                .get(id)
                .is_some_and(|t| t.health != Health::Unknown)
        {
            self.first_cycle.unknown = self.first_cycle.unknown.saturating_sub(1);
        }
        if !self.first_cycle.done && self.first_cycle.unknown == 0 {
            self.first_cycle.done = true;
            self.observers.first_cycle_done();
            tracing::info!("first probe cycle done");
            for i in 0..self.services.len() {
                self.update_service_gauges(i);
            }
        }
        if success && self.awaiting > 0 {
            // A success may confirm removals that were waiting for proof that the network works.
            let waiting: Vec<usize> = self
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.awaiting_confirmation)
                .map(|(i, _)| i)
                .collect();
            for i in waiting {
                self.mark_dirty(i);
            }
        }
        self.update_hold();
    }

    fn on_transition(&mut self, slot: &TargetSlot, from: Health) {
        let t = &slot.target;
        let key = self
            .services
            .get(slot.service)
            .map_or("", |s| s.key.as_str());
        if from == Health::Unknown {
            // Logged with the service's other first verdicts (see `events`).
            self.logs.first_round.record(
                slot.service,
                key,
                t,
                slot.health,
                slot.last_error.as_deref(),
            );
        } else if self
            .logs
            .bursts
            .allow(slot.service, key, slot.health, Instant::now())
        {
            match slot.health {
                Health::Down => tracing::warn!(
                    service = %t.service, target = %t.name, addr = %t.addr(),
                    error = slot.last_error.as_deref().unwrap_or(""),
                    "target down"
                ),
                _ => tracing::info!(
                    service = %t.service, target = %t.name, addr = %t.addr(), from = stored(from).as_str(),
                    "target up"
                ),
            }
        }
        self.persister.write(Write::Event(TransitionEvent {
            schema: state_store::SCHEMA_VERSION,
            service: t.service.to_string(),
            target: t.name.to_string(),
            ip: t.ip,
            from: stored(from),
            to: stored(slot.health),
            at: state_store::now_ms(),
            error: slot.last_error.clone(),
        }));
        if self.durable {
            self.persister
                .write(Write::Targets(t.service.to_string(), vec![slot.record()]));
        }
    }

    /// Cancels every in-flight reconcile (their services are dirty again, so they are decided
    /// afresh once writing is allowed). A request already on the wire may still arrive; nothing
    /// decided before `reason` is retried or sent after it.
    fn cancel_in_flight(&mut self, reason: &str) {
        if !self.reconciles.is_empty() {
            tracing::warn!(reason, "cancelling in-flight writes");
            self.reconciles.abort_all();
        }
        for s in &mut self.services {
            if s.in_flight {
                s.in_flight = false;
                s.dirty = true;
            }
        }
    }

    fn update_hold(&mut self) {
        let holds = self.failsafe.holds();
        if holds != self.holding {
            self.holding = holds;
            self.observers.failsafe(holds);
            if holds {
                // A reconcile decided before the hold (or retrying after an ApiServer fault)
                // would otherwise land during it with what was decided earlier.
                self.cancel_in_flight("fail-safe active");
            }
            self.publish_status();
            if holds {
                tracing::error!(
                    canary = self.failsafe.canary_failing(),
                    "fail-safe active: every probe is failing, so epcheck's own network is the \
                     likelier fault; no Endpoints are written until a probe succeeds"
                );
            } else {
                tracing::warn!("fail-safe released: probes succeed again; writes resume");
            }
        }
    }

    fn mark_dirty(&mut self, service: usize) {
        let due = Instant::now() + self.options.batch_delay;
        if let Some(s) = self.services.get_mut(service) {
            if !s.dirty {
                s.dirty = true;
                s.due = due;
            } else if s.failures == 0 {
                s.due = s.due.min(due);
            }
        }
    }

    fn resync(&mut self) {
        let now = Instant::now();
        for s in &mut self.services {
            if !s.dirty {
                s.dirty = true;
                s.due = now;
            }
            // Read and compare the live object again even if nothing changed here. What was
            // applied is kept: the fail-safe's removal rule needs to know what is written.
            s.force_read = true;
        }
    }

    fn flush(&mut self) {
        if !self.durable {
            return;
        }
        for s in &self.services {
            let records = s
                .targets
                .iter()
                .filter_map(|&i| self.targets.get(i))
                .map(TargetSlot::record)
                .collect();
            self.persister.write(Write::Targets(s.key.clone(), records));
        }
    }

    /// The addresses a service should have now: ready, not ready, held as the live object
    /// has them (consensus without a quorum, before this replica wrote the service), and
    /// whether a removal awaits confirmation.
    fn desired(&self, service: &ServiceSlot) -> Desired {
        let mut ready = BTreeSet::new();
        let mut not_ready = BTreeSet::new();
        let mut held = BTreeSet::new();
        let mut awaiting = false;
        let applied_ready: BTreeSet<IpAddr> = service
            .applied
            .as_ref()
            .map(|(r, _)| r.iter().copied().collect())
            .unwrap_or_default();
        let consensus = self.consensus.as_ref().map(|link| {
            let holding = link.hold_reason().is_some();
            (link, holding)
        });
        let abstaining = self.abstaining().is_some();
        for slot in service.targets.iter().filter_map(|&i| self.targets.get(i)) {
            let ip = slot.target.ip;
            if let Some((link, holding)) = consensus {
                let tally = link.tally(&service.key, ip, Vote::of(slot.health, abstaining));
                match link.verdict(&tally, holding) {
                    Verdict::Up => {
                        ready.insert(ip);
                        continue;
                    }
                    // Others see it down too: the failure is the target's, not this replica's.
                    Verdict::Down if tally.remote_down > 0 => {
                        not_ready.insert(ip);
                        continue;
                    }
                    // Down by this replica's vote alone (it is the only view): as without
                    // consensus, below.
                    Verdict::Down => {}
                    Verdict::Hold => {
                        match &service.applied {
                            Some(_) if applied_ready.contains(&ip) => ready.insert(ip),
                            Some(_) => not_ready.insert(ip),
                            None => held.insert((ip, slot.health == Health::Up)),
                        };
                        continue;
                    }
                }
            }
            match slot.health {
                Health::Up => {
                    ready.insert(ip);
                }
                Health::Down if applied_ready.contains(&ip) => {
                    // Written as ready: remove it only once the fail-safe confirms the failure
                    // is the target's, not the checker's.
                    let confirmed = slot
                        .failing_since
                        .is_some_and(|f| self.failsafe.removal_confirmed(f));
                    if confirmed {
                        not_ready.insert(ip);
                    } else {
                        awaiting |= slot.failing_since.is_some();
                        ready.insert(ip);
                    }
                }
                _ => {
                    not_ready.insert(ip);
                }
            }
        }
        not_ready.retain(|ip| !ready.contains(ip));
        held.retain(|(ip, _)| !ready.contains(ip) && !not_ready.contains(ip));
        Desired {
            ready: ready.into_iter().collect(),
            not_ready: not_ready.into_iter().collect(),
            held: held.into_iter().collect(),
            awaiting,
        }
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        if !self.leads() {
            // Followers probe and report but never write; leadership changes wake the loop.
            for s in self.services.iter_mut().filter(|s| s.dirty && s.due <= now) {
                s.due = now + Duration::from_millis(200);
            }
            return;
        }
        if self.holding {
            // Nothing is written while the fail-safe holds; check again shortly.
            for s in self.services.iter_mut().filter(|s| s.dirty && s.due <= now) {
                s.due = now + Duration::from_millis(200);
            }
            return;
        }
        // While the ApiServer is unavailable one reconcile at a time tests it, about once a
        // second, with a single attempt per request: the service that has waited longest,
        // whatever its own backoff says; the other services wait behind it.
        let outage = self.outage.is_active();
        let test = if outage {
            if !self.reconciles.is_empty() || now < self.outage_test_at {
                return;
            }
            let waiting = self.services.iter().enumerate();
            match waiting
                .filter(|(_, s)| s.dirty && !s.in_flight)
                .min_by_key(|(_, s)| s.due)
            {
                Some((i, _)) => Some(i),
                None => return,
            }
        } else {
            None
        };
        for i in 0..self.services.len() {
            if self.reconciles.len() >= MAX_RECONCILES || (outage && !self.reconciles.is_empty()) {
                // The rest stay due and start as reconciles finish.
                break;
            }
            if outage && test != Some(i) {
                continue;
            }
            let Some(s) = self.services.get(i) else {
                continue;
            };
            if !s.dirty || s.in_flight || (s.due > now && test != Some(i)) {
                continue;
            }
            if s.selector_owned && !s.force_read {
                // The cluster's controllers own it: only a resync looks again.
                if let Some(s) = self.services.get_mut(i) {
                    s.dirty = false;
                }
                continue;
            }
            let unknown = s
                .targets
                .iter()
                .filter_map(|&t| self.targets.get(t))
                .any(|t| t.health == Health::Unknown);
            if unknown && now < self.first_cycle.deadline {
                let deadline = self.first_cycle.deadline;
                if let Some(s) = self.services.get_mut(i) {
                    s.due = deadline.min(now + Duration::from_millis(100));
                }
                continue;
            }
            let Desired {
                ready,
                not_ready,
                held,
                awaiting,
            } = self.desired(s);
            let unchanged = !s.force_read
                && held.is_empty()
                && s.applied
                    .as_ref()
                    .is_some_and(|(r, n)| *r == ready && *n == not_ready);
            let writer = s.writer.clone();
            let Some(s) = self.services.get_mut(i) else {
                continue;
            };
            if s.awaiting_confirmation != awaiting {
                s.awaiting_confirmation = awaiting;
                if awaiting {
                    self.awaiting += 1;
                } else {
                    self.awaiting = self.awaiting.saturating_sub(1);
                }
            }
            s.dirty = false;
            if !unchanged {
                s.force_read = false;
            }
            if unchanged {
                continue;
            }
            s.in_flight = true;
            let client = if outage {
                let jitter = rand::Rng::random_range(&mut rand::rng(), 0.8..1.2);
                self.outage_test_at = now + OUTAGE_TEST_EVERY.mul_f64(jitter);
                self.client.with_request_retry(RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::REQUEST
                })
            } else {
                self.client.clone()
            };
            self.reconciles.spawn(async move {
                let (ready, not_ready) =
                    match resolve_held(&writer, &client, ready, not_ready, held).await {
                        Ok(sets) => sets,
                        Err((ready, not_ready, e)) => {
                            return Done {
                                service: i,
                                ready,
                                not_ready,
                                result: Err(e),
                            };
                        }
                    };
                let result = writer
                    .reconcile(&client, &ready, &not_ready, ReconcileMode::Apply)
                    .await;
                Done {
                    service: i,
                    ready,
                    not_ready,
                    result,
                }
            });
        }
        if outage && self.reconciles.is_empty() {
            // The pick had nothing to send yet (first probes pending, or nothing changed):
            // look again shortly rather than at once.
            self.outage_test_at = self.outage_test_at.max(now + Duration::from_millis(100));
        }
    }

    fn on_done(&mut self, done: Done) {
        let max_retry = self.options.max_retry_delay;
        let Some(s) = self.services.get_mut(done.service) else {
            return;
        };
        s.in_flight = false;
        let mut outage_ended = false;
        // A service's first reconcile is summed up in the start's one line, whatever its end.
        let first = self.logs.start_writes.record(
            done.service,
            match &done.result {
                Ok(outcome) => events::FirstReconcile::Written(outcome.action),
                Err(_) => events::FirstReconcile::NotWritten,
            },
        );
        match done.result {
            Ok(outcome) => {
                ownership::managed(
                    s,
                    outcome.unmatched_ports.as_ref(),
                    &*self.observers,
                    done.service,
                );
                s.failures = 0;
                let succeeded = self.outage.succeeded(Instant::now());
                outage_ended = matches!(succeeded, OutageLog::Ended { .. });
                log_outage(&succeeded, None);
                let now = SystemTime::now();
                self.observers.reconciled(done.service, outcome.action);
                s.last_reconcile = Some(now);
                s.last_error = None;
                self.observers.apiserver_ok();
                if first && outcome.action.is_write() {
                    tracing::debug!(
                        service = %s.key,
                        object = %format!("{}/{}", s.writer.namespace(), s.writer.name()),
                        action = %outcome.action,
                        change = %outcome.change,
                        "endpoints written (first reconcile)"
                    );
                } else if outcome.action.is_write() {
                    tracing::info!(
                        service = %s.key,
                        object = %format!("{}/{}", s.writer.namespace(), s.writer.name()),
                        action = %outcome.action,
                        change = %outcome.change,
                        conflicts = outcome.conflicts,
                        "endpoints written"
                    );
                }
                self.persister.write(Write::Applied(
                    s.key.clone(),
                    AppliedRecord {
                        schema: state_store::SCHEMA_VERSION,
                        ready: done.ready.iter().map(ToString::to_string).collect(),
                        not_ready: done.not_ready.iter().map(ToString::to_string).collect(),
                        resource_version: outcome.resource_version.clone(),
                        applied_at: state_store::now_ms(),
                    },
                ));
                let before = s.applied.as_ref().map(|(r, _)| r.clone());
                let after = done.ready.clone();
                s.applied = Some((done.ready, done.not_ready));
                if let Some(before) = before {
                    self.report_decisions(done.service, &before, &after);
                }
            }
            Err(e) if e.is_selector_owned() => {
                // The ApiServer answered: not part of an outage.
                let succeeded = self.outage.succeeded(Instant::now());
                outage_ended = matches!(succeeded, OutageLog::Ended { .. });
                log_outage(&succeeded, None);
                ownership::selector_owned(s, &e, &*self.observers, done.service);
            }
            Err(e) => {
                s.failures += 1;
                self.observers.reconcile_failed(done.service);
                let text = e.to_string();
                let wait = Backoff::new(RetryPolicy {
                    max_attempts: u32::MAX,
                    base_delay: RECONCILE_RETRY_BASE,
                    max_delay: max_retry,
                    max_retry_after: Duration::ZERO,
                    jitter: Jitter::Equal,
                })
                .delay(s.failures.min(10));
                let unavailable = matches!(classify(&e), RetryDecision::Backoff { .. });
                // Logged by state change: an outage by the ApiServer's state (see `outage`),
                // any other error when it differs from the service's previous one.
                let quiet = if unavailable {
                    log_outage(&self.outage.failed(Instant::now(), &s.key), Some(&text));
                    true
                } else {
                    s.last_error.as_deref() == Some(text.as_str())
                };
                if quiet {
                    tracing::debug!(
                        service = %s.key,
                        error = %e,
                        attempt = s.failures,
                        retry_in_ms = wait.as_millis() as u64,
                        "reconcile failed; nothing partial was written, retrying"
                    );
                } else {
                    tracing::error!(
                        service = %s.key,
                        error = %e,
                        attempt = s.failures,
                        retry_in_ms = wait.as_millis() as u64,
                        "reconcile failed; nothing partial was written, retrying"
                    );
                }
                s.last_error = Some(text);
                s.dirty = true;
                s.due = Instant::now() + wait;
            }
        }
        if outage_ended {
            // Every service that waited behind the test reconcile goes now, whatever its own
            // backoff had grown to.
            let now = Instant::now();
            for s in self.services.iter_mut().filter(|s| s.dirty && !s.in_flight) {
                s.due = now;
                s.failures = 0;
            }
        }
        self.update_service_gauges(done.service);
        self.status_dirty = true;
    }
}

/// What a service should have now (see [`Engine::desired`]).
struct Desired {
    ready: Vec<IpAddr>,
    not_ready: Vec<IpAddr>,
    /// Held as the live object has them, with this replica's own verdict (up or not) for
    /// when there is no live object yet.
    held: Vec<(IpAddr, bool)>,
    awaiting: bool,
}

/// Puts the `held` addresses where the live object has them (ready or not); where nothing
/// was written yet, there is no state to hold, and this replica's own verdict is taken.
async fn resolve_held(
    writer: &crate::writer::ObjectWriter,
    client: &Client,
    mut ready: Vec<IpAddr>,
    mut not_ready: Vec<IpAddr>,
    held: Vec<(IpAddr, bool)>,
) -> Result<(Vec<IpAddr>, Vec<IpAddr>), (Vec<IpAddr>, Vec<IpAddr>, crate::Error)> {
    if held.is_empty() {
        return Ok((ready, not_ready));
    }
    match writer.live_ready(client).await {
        Ok(live) => {
            for (ip, up) in held {
                let is_ready = live.as_ref().map_or(up, |live| live.contains(&ip));
                if is_ready {
                    ready.push(ip);
                } else {
                    not_ready.push(ip);
                }
            }
            ready.sort();
            not_ready.sort();
            Ok((ready, not_ready))
        }
        Err(e) => Err((ready, not_ready, e)),
    }
}

/// Schedules the fail-safe's canary, if the spec has one; its scheduler id.
fn add_canary(spec: &DaemonSpec, scheduler: &mut Scheduler) -> Option<usize> {
    spec.failsafe.canary.map(|addr| {
        let target = Target::new("epcheck-canary", "canary", addr.ip(), addr.port());
        let opts = ScheduleOptions {
            interval: spec.interval,
            fast_interval: spec.fast_interval,
            jitter: 0.0,
            timeout: spec.timeout,
        };
        let tracker = probe_core::HealthTracker::new(1, 1);
        scheduler
            .add(target, Arc::new(Check::tcp()), tracker, opts)
            .index()
    })
}

/// Logs what [`ApiOutage`] asks for; `error` is the failure that started or continues it.
fn log_outage(log: &OutageLog, error: Option<&str>) {
    match log {
        OutageLog::Quiet => {}
        OutageLog::Started => tracing::error!(
            error = error.unwrap_or_default(),
            "the ApiServer is unavailable: reconciles are retried with backoff and nothing partial is written; a summary follows once a minute until it answers"
        ),
        OutageLog::Summary {
            lasted,
            failures,
            services,
        } => tracing::warn!(
            lasted_s = lasted.as_secs(),
            failed_reconciles = failures,
            services,
            last_error = error.unwrap_or_default(),
            "the ApiServer is still unavailable"
        ),
        OutageLog::Ended { lasted, failures } => tracing::info!(
            lasted_s = lasted.as_secs(),
            failed_reconciles = failures,
            "the ApiServer answers again; pending writes go out now"
        ),
    }
}
