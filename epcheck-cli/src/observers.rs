//! The binary's plug-ins on the daemon ([`k8s_endpoints::daemon::Observer`]): Prometheus
//! metrics, notify scripts and webhooks, and the readiness latch and `/status` document of the
//! HTTP server.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use k8s_endpoints::ReconcileAction;
use k8s_endpoints::daemon::{ConsensusReport, Observer, StartedService, StatusSnapshot, TargetRef};
use k8s_endpoints::election::LeaderState;
use probe_core::{Health, ProbeOutcome, Transition};
use tokio::sync::watch;

use crate::metrics::{Metrics, ServiceMetrics, TargetMetrics};
use crate::notify::{NotifyEvent, ServiceTracker, TargetEvent, should_notify};
use crate::server::Readiness;
use k8s_endpoints::consensus::Tally;

/// Metrics: per-target and per-service series resolved once at start-up, so a probe costs no
/// label lookup.
pub struct MetricsObserver {
    metrics: Metrics,
    /// Whether each target has series of its own (`metrics.per_target`).
    per_target: bool,
    services: OnceLock<Vec<ServiceMetrics>>,
    targets: OnceLock<Vec<TargetMetrics>>,
}

impl MetricsObserver {
    /// Reports into `metrics`, with per-target series or without (`metrics.per_target`).
    pub fn new(metrics: Metrics, per_target: bool) -> Self {
        MetricsObserver {
            metrics,
            per_target,
            services: OnceLock::new(),
            targets: OnceLock::new(),
        }
    }

    fn target(&self, index: usize) -> Option<&TargetMetrics> {
        self.targets.get().and_then(|t| t.get(index))
    }

    fn service(&self, index: usize) -> Option<&ServiceMetrics> {
        self.services.get().and_then(|s| s.get(index))
    }
}

impl Observer for MetricsObserver {
    fn started(&self, services: &[StartedService]) {
        let mut service_handles = Vec::with_capacity(services.len());
        let mut target_handles = Vec::new();
        for s in services {
            let handles = self.metrics.service(&s.key);
            if self.per_target {
                for (target, health) in &s.targets {
                    let t = handles.target(&target.name);
                    t.set_health(*health);
                    target_handles.push(t);
                }
            }
            service_handles.push(handles);
        }
        let _ = self.services.set(service_handles);
        let _ = self.targets.set(target_handles);
    }

    fn probed(&self, target: TargetRef<'_>, outcome: &ProbeOutcome) {
        // Probe counts and durations are per service either way.
        if let Some(s) = self.service(target.service) {
            s.probe(outcome);
        }
    }

    fn slots_skipped(&self, service: usize, count: u32) {
        if let Some(s) = self.service(service) {
            s.slots_skipped(count);
        }
    }

    fn consensus(&self, report: &ConsensusReport) {
        let names: Vec<Arc<str>> = self
            .services
            .get()
            .map(|s| s.iter().map(ServiceMetrics::name).collect())
            .unwrap_or_default();
        self.metrics.set_consensus(report, &names);
    }

    fn transition(&self, target: TargetRef<'_>, transition: &Transition, _error: Option<&str>) {
        if let Some(t) = self.target(target.index) {
            t.transition(transition.to);
        }
    }

    fn health(&self, target: TargetRef<'_>, health: Health) {
        if let Some(t) = self.target(target.index) {
            t.set_health(health);
        }
    }

    fn service_targets(
        &self,
        service: usize,
        _key: &str,
        ready: usize,
        total: usize,
        _unknown: usize,
    ) {
        if let Some(s) = self.service(service) {
            s.set_endpoints(ready, total);
        }
    }

    fn reconciled(&self, service: usize, action: ReconcileAction) {
        if let Some(s) = self.service(service) {
            s.reconciled(action, SystemTime::now());
        }
    }

    fn reconcile_failed(&self, service: usize) {
        if let Some(s) = self.service(service) {
            s.reconcile_failed();
        }
    }

    fn selector_owned(&self, service: usize, owned: bool) {
        if let Some(s) = self.service(service) {
            s.set_selector_owned(owned);
        }
    }

    fn failsafe(&self, holding: bool) {
        self.metrics.set_failsafe_active(holding);
    }

    fn leadership(&self, state: &LeaderState) {
        self.metrics.set_leader(state.is_leader);
    }

    fn store_error(&self) {
        self.metrics.store_error();
    }

    fn unconfigured(&self, objects: usize) {
        self.metrics.set_unconfigured(objects);
    }
}

/// The notify script and webhooks: a target's transition (not its first verdict of up, nor a
/// restored state), and a service's HEALTHY/DEGRADED/DOWN once all its targets are known.
pub struct NotifyObserver {
    notifier: Arc<crate::notify::Notifier>,
    services: Mutex<ServiceTracker>,
    /// With consensus a target's events are the leader's decisions, not each replica's
    /// probe results.
    consensus: bool,
}

impl NotifyObserver {
    /// Sends through `notifier`; with `consensus`, target events come from the leader's
    /// decisions only.
    pub fn new(notifier: Arc<crate::notify::Notifier>, consensus: bool) -> Self {
        NotifyObserver {
            notifier,
            services: Mutex::new(ServiceTracker::new()),
            consensus,
        }
    }
}

impl Observer for NotifyObserver {
    fn started(&self, services: &[StartedService]) {
        // Restored state is not news: record it without notifying.
        let mut tracker = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for s in services {
            let known = s.targets.iter().all(|(_, h)| *h != Health::Unknown);
            if !s.targets.is_empty() && known {
                let ready = s.targets.iter().filter(|(_, h)| *h == Health::Up).count();
                tracker.restore(&s.key, ready, s.targets.len());
            }
        }
    }

    fn transition(&self, target: TargetRef<'_>, transition: &Transition, error: Option<&str>) {
        if should_notify(transition) && !self.consensus {
            self.notifier.notify(NotifyEvent::Target(TargetEvent::new(
                target.target,
                transition,
                error.map(str::to_owned),
            )));
        }
    }

    fn decided(&self, target: TargetRef<'_>, ready: bool, tally: &Tally) {
        self.notifier
            .notify(NotifyEvent::Target(TargetEvent::decided(
                target.target,
                ready,
                tally,
            )));
    }

    fn service_targets(
        &self,
        _service: usize,
        key: &str,
        ready: usize,
        total: usize,
        unknown: usize,
    ) {
        if unknown > 0 {
            return;
        }
        let event = self
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(key, ready, total, SystemTime::now());
        if let Some(event) = event {
            self.notifier.notify(NotifyEvent::Service(event));
        }
    }
}

/// `/readyz` and `/status`: the readiness latch and the latest status document.
pub struct ServerObserver {
    readiness: Readiness,
    status: watch::Sender<Arc<StatusSnapshot>>,
}

impl ServerObserver {
    /// Opens `readiness` as the daemon gets there and publishes into `status`.
    pub fn new(readiness: Readiness, status: watch::Sender<Arc<StatusSnapshot>>) -> Self {
        ServerObserver { readiness, status }
    }
}

impl Observer for ServerObserver {
    fn first_cycle_done(&self) {
        self.readiness.set_first_cycle_done();
    }

    fn apiserver_ok(&self) {
        self.readiness.set_apiserver_ok();
    }

    fn status(&self, status: &Arc<StatusSnapshot>) {
        self.status.send_replace(status.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use probe_core::Target;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The page after one service of two targets started and one probe came back.
    fn page(per_target: bool) -> String {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let o = MetricsObserver::new(metrics, per_target);
        let targets: Vec<Target> = (1..=2u8)
            .map(|i| Target::new("web", format!("n{i}"), [198, 51, 100, i].into(), 80))
            .collect();
        o.started(&[StartedService {
            key: "web".into(),
            targets: targets.iter().map(|t| (t.clone(), Health::Up)).collect(),
        }]);
        let target = TargetRef {
            index: 1,
            service: 0,
            target: &targets[1],
        };
        o.probed(target, &ProbeOutcome::up(Duration::from_millis(1)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn per_target_series_can_be_turned_off_and_service_series_stay() {
        let sample = |page: &str, prefix: &str| page.lines().any(|l| l.starts_with(prefix));
        let with = page(true);
        assert!(sample(&with, "epcheck_target_up{"), "{with}");
        assert!(sample(&with, "epcheck_probes_total{"), "{with}");
        let without = page(false);
        assert!(!sample(&without, "epcheck_target_up{"), "{without}");
        assert!(
            !sample(&without, "epcheck_target_transitions_total{"),
            "{without}"
        );
        assert!(sample(&without, "epcheck_probes_total{"), "{without}");
    }
}
