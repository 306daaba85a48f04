//! What the daemon reports as it works. Metrics, notifications and `/status` are observers
//! that the `epcheck` binary attaches; an embedder attaches its own. Every method has an empty
//! default, so an observer implements only what it wants. They are called on the daemon's
//! loop: they must be quick and must not block (hand slow work, such as running a script, to
//! a task of their own).
//!
//! Targets are named by their index in the daemon's table ([`TargetRef::index`], in service
//! order, then target order, as [`Observer::started`] lists them), so an observer can keep
//! per-target state in a `Vec` instead of looking names up on every probe.

use std::sync::Arc;

use probe_core::{Health, ProbeOutcome, Target, Transition};

use super::status::StatusSnapshot;
use crate::client::ReconcileAction;
use crate::consensus::Tally;
use crate::election::LeaderState;

/// One target, as the daemon's table holds it.
#[derive(Debug, Clone, Copy)]
pub struct TargetRef<'a> {
    /// Its index in the target table.
    pub index: usize,
    /// The index of its service in [`DaemonSpec::services`](super::DaemonSpec::services).
    pub service: usize,
    /// The target.
    pub target: &'a Target,
}

/// One service at start-up: its key and its targets with the health restored from the store.
#[derive(Debug, Clone)]
pub struct StartedService {
    /// The service key.
    pub key: String,
    /// Its targets (their table indices follow each other, in this order) and their health.
    pub targets: Vec<(Target, Health)>,
}

/// Multi-vantage consensus as the leader sees it after a read of the views (SPEC §9.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsensusReport {
    /// Views that count, this replica's included.
    pub fresh: usize,
    /// Of those, views that abstain.
    pub abstaining: usize,
    /// Views that do not count (stale, unreadable).
    pub stale: usize,
    /// Every target holds its last written state (too few views, or none readable).
    pub holding: bool,
    /// Per service, in spec order: targets on which the voting views disagree.
    pub disagreements: Vec<usize>,
}

/// Receives what the daemon does.
#[allow(unused_variables)]
pub trait Observer: Send + Sync {
    /// Once, before the first probe: every service and its targets, in table order, with
    /// the health restored from the store (`Unknown` when none was).
    fn started(&self, services: &[StartedService]) {}

    /// A probe of `target` finished.
    fn probed(&self, target: TargetRef<'_>, outcome: &ProbeOutcome) {}

    /// `count` regular probe slots of a target of `service` passed while its probe waited for
    /// a permit, and were skipped: the probes do not keep up (probe-core's scheduler, rule 7).
    fn slots_skipped(&self, service: usize, count: u32) {}

    /// `target` changed health (rise/fall passed, or its first probe decided), with the last
    /// probe's error.
    fn transition(&self, target: TargetRef<'_>, transition: &Transition, error: Option<&str>) {}

    /// With consensus, on the leader: `target` was written ready (`true`) or not ready
    /// (`false`) by the votes of `tally`.
    fn decided(&self, target: TargetRef<'_>, ready: bool, tally: &Tally) {}

    /// With consensus, on the leader: the views after a change.
    fn consensus(&self, report: &ConsensusReport) {}

    /// `target`'s health became known without a transition (a restored tracker's first probe).
    fn health(&self, target: TargetRef<'_>, health: Health) {}

    /// A service's targets after a change: `ready` of `total` are up, `unknown` not probed yet.
    fn service_targets(
        &self,
        service: usize,
        key: &str,
        ready: usize,
        total: usize,
        unknown: usize,
    ) {
    }

    /// A reconcile of `service` succeeded with `action` (also when nothing was written).
    fn reconciled(&self, service: usize, action: ReconcileAction) {}

    /// A reconcile of `service` failed (it is retried with backoff).
    fn reconcile_failed(&self, service: usize) {}

    /// `service`'s Service has (`true`) or no longer has (`false`) a selector: the cluster's
    /// controllers own its endpoints and the daemon stands aside.
    fn selector_owned(&self, service: usize, owned: bool) {}

    /// The fail-safe started (`true`) or stopped (`false`) holding every write.
    fn failsafe(&self, holding: bool) {}

    /// Leadership changed (always leading without an election).
    fn leadership(&self, state: &LeaderState) {}

    /// Every target's health is known: the first probe cycle is done.
    fn first_cycle_done(&self) {}

    /// The ApiServer answered a reconcile.
    fn apiserver_ok(&self) {}

    /// A write to the state store failed (the daemon goes on without it).
    fn store_error(&self) {}

    /// Objects of this instance whose Service is not configured, at the last look.
    fn unconfigured(&self, objects: usize) {}

    /// A new status document (at most every 100 ms while things change, and at each flush).
    fn status(&self, status: &Arc<StatusSnapshot>) {}
}

/// Several observers as one, called in order.
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.0.len())
    }
}

impl Observers {
    /// Adds `observer`.
    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.0.push(observer);
    }
}

impl Observer for Observers {
    fn started(&self, services: &[StartedService]) {
        self.0.iter().for_each(|o| o.started(services));
    }
    fn probed(&self, target: TargetRef<'_>, outcome: &ProbeOutcome) {
        self.0.iter().for_each(|o| o.probed(target, outcome));
    }
    fn slots_skipped(&self, service: usize, count: u32) {
        self.0.iter().for_each(|o| o.slots_skipped(service, count));
    }
    fn transition(&self, target: TargetRef<'_>, transition: &Transition, error: Option<&str>) {
        self.0
            .iter()
            .for_each(|o| o.transition(target, transition, error));
    }
    fn health(&self, target: TargetRef<'_>, health: Health) {
        self.0.iter().for_each(|o| o.health(target, health));
    }
    fn decided(&self, target: TargetRef<'_>, ready: bool, tally: &Tally) {
        self.0.iter().for_each(|o| o.decided(target, ready, tally));
    }
    fn consensus(&self, report: &ConsensusReport) {
        self.0.iter().for_each(|o| o.consensus(report));
    }
    fn service_targets(
        &self,
        service: usize,
        key: &str,
        ready: usize,
        total: usize,
        unknown: usize,
    ) {
        self.0
            .iter()
            .for_each(|o| o.service_targets(service, key, ready, total, unknown));
    }
    fn reconciled(&self, service: usize, action: ReconcileAction) {
        self.0.iter().for_each(|o| o.reconciled(service, action));
    }
    fn reconcile_failed(&self, service: usize) {
        self.0.iter().for_each(|o| o.reconcile_failed(service));
    }
    fn selector_owned(&self, service: usize, owned: bool) {
        self.0.iter().for_each(|o| o.selector_owned(service, owned));
    }
    fn failsafe(&self, holding: bool) {
        self.0.iter().for_each(|o| o.failsafe(holding));
    }
    fn leadership(&self, state: &LeaderState) {
        self.0.iter().for_each(|o| o.leadership(state));
    }
    fn first_cycle_done(&self) {
        self.0.iter().for_each(|o| o.first_cycle_done());
    }
    fn apiserver_ok(&self) {
        self.0.iter().for_each(|o| o.apiserver_ok());
    }
    fn store_error(&self) {
        self.0.iter().for_each(|o| o.store_error());
    }
    fn unconfigured(&self, objects: usize) {
        self.0.iter().for_each(|o| o.unconfigured(objects));
    }
    fn status(&self, status: &Arc<StatusSnapshot>) {
        self.0.iter().for_each(|o| o.status(status));
    }
}
