//! What the daemon knows about each target and service between probes.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use probe_core::{Health, HealthTracker, Target};
use state_store::{Health as StoredHealth, TargetRecord};
use tokio::time::Instant;

use std::sync::Arc;

use probe_core::{Check, Scheduler};
use state_store::StateStore;

use super::observe::StartedService;
use super::spec::DaemonSpec;
use crate::writer::{ObjectWriter, ServerPolicy};

/// One target's runtime state.
#[derive(Debug, Clone)]
pub struct TargetSlot {
    /// Index of its service in the table.
    pub service: usize,
    /// The target.
    pub target: Target,
    /// Current health.
    pub health: Health,
    /// When `health` was entered (wall clock, for the store and `status`).
    pub since: SystemTime,
    /// Start time of the first failing probe of the current failure streak.
    pub failing_since: Option<Instant>,
    /// The last probe's error.
    pub last_error: Option<String>,
    /// When the last probe finished (wall clock).
    pub last_probe: Option<SystemTime>,
    /// Consecutive passing probes.
    pub successes: u32,
    /// Consecutive failing probes.
    pub failures: u32,
    /// Index in the fail-safe, `None` for targets that are not probed (`port: 0`).
    pub failsafe_index: Option<usize>,
}

impl TargetSlot {
    /// The record stored for this target.
    pub fn record(&self) -> TargetRecord {
        let mut r = TargetRecord::new(
            self.target.service.as_ref(),
            self.target.name.as_ref(),
            self.target.ip,
            self.target.port,
        );
        r.state = stored(self.health);
        r.since = state_store::unix_ms(self.since);
        r.last_probe_at = self.last_probe.map(state_store::unix_ms);
        r.last_error = self.last_error.clone();
        r.consecutive_successes = self.successes;
        r.consecutive_failures = self.failures;
        r
    }
}

/// One service's runtime state.
#[derive(Debug)]
pub struct ServiceSlot {
    /// The service key.
    pub key: String,
    /// Renders and writes its objects.
    pub writer: ObjectWriter,
    /// How its targets are probed (also for witness probes).
    pub check: Arc<Check>,
    /// Its targets (indices into the target table).
    pub targets: Vec<usize>,
    /// Something changed since the last successful reconcile.
    pub dirty: bool,
    /// When the next reconcile may start.
    pub due: Instant,
    /// A reconcile is running.
    pub in_flight: bool,
    /// Consecutive failed reconciles (for backoff).
    pub failures: u32,
    /// The addresses last written or found equal: (ready, not ready).
    pub applied: Option<(Vec<IpAddr>, Vec<IpAddr>)>,
    /// A down target is waiting for the fail-safe's confirmation before it is removed.
    pub awaiting_confirmation: bool,
    /// A resync asks for the live object to be read even if nothing changed here.
    pub force_read: bool,
    /// When it was last reconciled successfully.
    pub last_reconcile: Option<SystemTime>,
    /// Why the last reconcile failed.
    pub last_error: Option<String>,
    /// The Service has a selector: the cluster's controllers own its endpoints and epcheck
    /// stands aside, checking again only at each resync (SPEC §9).
    pub selector_owned: bool,
    /// The warning about configured ports that match no port of the Service was logged.
    pub ports_warned: bool,
}

/// Probe-core's health as stored.
pub fn stored(h: Health) -> StoredHealth {
    match h {
        Health::Up => StoredHealth::Up,
        Health::Down => StoredHealth::Down,
        _ => StoredHealth::Unknown,
    }
}

/// A tracker restored from a stored record when it is recent enough (SPEC §5.2); otherwise a
/// cold-start tracker whose first result decides.
pub fn restore_tracker(
    record: Option<&TargetRecord>,
    rise: u32,
    fall: u32,
    max_age: std::time::Duration,
    now_ms: u64,
    now: Instant,
) -> (HealthTracker, Option<SystemTime>) {
    let Some(r) = record else {
        return (HealthTracker::new(rise, fall), None);
    };
    let health = match r.state {
        StoredHealth::Up => Health::Up,
        StoredHealth::Down => Health::Down,
        StoredHealth::Unknown => return (HealthTracker::new(rise, fall), None),
    };
    if r.age_at(now_ms) > max_age {
        return (HealthTracker::new(rise, fall), None);
    }
    let held_for = std::time::Duration::from_millis(now_ms.saturating_sub(r.since));
    let since = now.checked_sub(held_for);
    (
        HealthTracker::restore(rise, fall, health, since),
        Some(state_store::from_unix_ms(r.since)),
    )
}

/// The target and service tables built from a spec, with recent health restored from the
/// store (so a restart does not flap).
pub(crate) struct Tables {
    /// Every target, in service order; the index is the scheduler's id.
    pub targets: Vec<TargetSlot>,
    /// Every service whose object can be rendered.
    pub services: Vec<ServiceSlot>,
    /// What the observers are told at start-up.
    pub started: Vec<StartedService>,
    /// How many targets are probed (not static), for the fail-safe.
    pub probed: usize,
}

impl Tables {
    /// Builds the tables and adds every target to `scheduler`.
    pub(crate) async fn build(
        spec: &DaemonSpec,
        store: &dyn StateStore,
        server: ServerPolicy,
        scheduler: &mut Scheduler,
        now: Instant,
    ) -> Tables {
        let restore_age = spec.interval * 3 + Duration::from_secs(5);
        // A store that connects in the background (Redis) gets a moment to come up, so a
        // restart restores state instead of starting cold.
        let restore_deadline = now + Duration::from_secs(3);
        let now_ms = state_store::now_ms();
        let mut t = Tables {
            targets: Vec::new(),
            services: Vec::new(),
            started: Vec::with_capacity(spec.services.len()),
            probed: 0,
        };
        let mut restored = 0usize;
        for svc in &spec.services {
            let writer = match spec
                .renderer(svc, server.not_ready(svc.not_ready))
                .and_then(|r| ObjectWriter::new(r, spec.mode, server))
            {
                Ok(w) => w,
                Err(e) => {
                    // A config file's validation builds the same renderer first.
                    tracing::error!(service = %svc.key, error = %e, "service skipped");
                    continue;
                }
            };
            let records = load_records(store, &svc.key, restore_deadline).await;
            let check = Arc::new(svc.check.clone());
            let mut slot_ids = Vec::with_capacity(svc.targets.len());
            let mut view = StartedService {
                key: svc.key.clone(),
                targets: Vec::with_capacity(svc.targets.len()),
            };
            for target in &svc.targets {
                let record = records
                    .iter()
                    .find(|r| *r.name == *target.name && r.ip == target.ip);
                let (tracker, since) =
                    restore_tracker(record, svc.rise, svc.fall, restore_age, now_ms, now);
                restored += usize::from(tracker.state() != Health::Unknown);
                let failsafe_index = (!matches!(*check, Check::Static)).then(|| {
                    t.probed += 1;
                    t.probed - 1
                });
                let slot = TargetSlot {
                    service: t.services.len(),
                    target: target.clone(),
                    health: tracker.state(),
                    since: since.unwrap_or_else(SystemTime::now),
                    failing_since: None,
                    last_error: record.and_then(|r| r.last_error.clone()),
                    last_probe: None,
                    successes: 0,
                    failures: 0,
                    failsafe_index,
                };
                view.targets.push((target.clone(), slot.health));
                let id = scheduler.add(target.clone(), check.clone(), tracker, svc.schedule);
                debug_assert_eq!(id.index(), t.targets.len());
                slot_ids.push(t.targets.len());
                t.targets.push(slot);
            }
            let applied = match store.load_applied(&svc.key).await {
                Ok(Some(a)) => Some((parse_ips(&a.ready), parse_ips(&a.not_ready))),
                _ => None,
            };
            t.started.push(view);
            t.services.push(ServiceSlot::new(
                svc.key.clone(),
                writer,
                check,
                slot_ids,
                applied,
                now,
            ));
        }
        if restored > 0 {
            tracing::info!(restored, "restored recent target health from the store");
        }
        t
    }
}

impl ServiceSlot {
    /// A service due for its first reconcile at `now`.
    fn new(
        key: String,
        writer: ObjectWriter,
        check: Arc<Check>,
        targets: Vec<usize>,
        applied: Option<(Vec<IpAddr>, Vec<IpAddr>)>,
        now: Instant,
    ) -> Self {
        ServiceSlot {
            key,
            writer,
            check,
            targets,
            dirty: true,
            due: now,
            in_flight: false,
            failures: 0,
            applied,
            awaiting_confirmation: false,
            force_read: false,
            last_reconcile: None,
            last_error: None,
            selector_owned: false,
            ports_warned: false,
        }
    }
}

/// The stored records of `service`, retrying transient store errors until `deadline`; empty
/// (a cold start) when the store cannot answer in time.
async fn load_records(
    store: &dyn StateStore,
    service: &str,
    deadline: Instant,
) -> Vec<state_store::TargetRecord> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, store.load_targets(service)).await {
            Ok(Ok(records)) => return records,
            Ok(Err(e)) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(service, error = %e, "cannot restore state from the store; starting cold");
                return Vec::new();
            }
            Err(_) => {
                tracing::warn!(service, "the store did not answer; starting cold");
                return Vec::new();
            }
        }
    }
}

fn parse_ips(v: &[String]) -> Vec<IpAddr> {
    v.iter().filter_map(|s| s.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(state: StoredHealth, updated_ago_ms: u64, now_ms: u64) -> TargetRecord {
        let mut r = TargetRecord::new(
            "svc",
            "n1",
            "198.51.100.1".parse().unwrap_or(IpAddr::from([0; 4])),
            80,
        );
        r.state = state;
        r.updated_at = now_ms - updated_ago_ms;
        r.since = now_ms - 60_000;
        r
    }

    #[test]
    fn fresh_records_are_restored_and_stale_ones_are_not() {
        let now_ms = 10_000_000;
        let now = Instant::now();
        let max_age = Duration::from_secs(10);
        let fresh = record(StoredHealth::Down, 2_000, now_ms);
        let (t, since) = restore_tracker(Some(&fresh), 2, 3, max_age, now_ms, now);
        assert_eq!(t.state(), Health::Down);
        assert!(since.is_some());
        let stale = record(StoredHealth::Down, 20_000, now_ms);
        let (t, _) = restore_tracker(Some(&stale), 2, 3, max_age, now_ms, now);
        assert_eq!(t.state(), Health::Unknown);
        let unknown = record(StoredHealth::Unknown, 0, now_ms);
        let (t, _) = restore_tracker(Some(&unknown), 2, 3, max_age, now_ms, now);
        assert_eq!(t.state(), Health::Unknown);
        let (t, _) = restore_tracker(None, 2, 3, max_age, now_ms, now);
        assert_eq!(t.state(), Health::Unknown);
    }
}
