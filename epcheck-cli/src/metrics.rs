//! The daemon's Prometheus metrics (SPEC §8.1), built on `prometheus-client`: one [`Metrics`]
//! value, registered once into a [`Registry`] that the HTTP server ([`crate::server`]) encodes.
//!
//! Nothing here is global. The daemon creates a [`Metrics`], registers it, and resolves a
//! handle per service ([`ServiceMetrics`]) and per target ([`TargetMetrics`]) at start-up, so
//! the hot path (one call per probe) only touches atomics and one histogram lock: no label
//! set is built, hashed or allocated per probe.
//!
//! # Families, as they appear in a scrape
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `epcheck_target_up` | gauge (1 up, 0 down or not probed yet) | `service`, `target` |
//! | `epcheck_probes_total` | counter | `service`, `result` = `up` or a failure kind |
//! | `epcheck_probe_duration_seconds` | histogram, 0.1 ms – 10 s | `service` |
//! | `epcheck_probe_slots_skipped_total` | counter (regular probe slots skipped because no probe permit was free in time) | `service` |
//! | `epcheck_target_transitions_total` | counter | `service`, `target`, `to` = `up`/`down` |
//! | `epcheck_service_ready_endpoints` | gauge | `service` |
//! | `epcheck_service_configured_endpoints` | gauge | `service` |
//! | `epcheck_endpoint_writes_total` | counter | `service`, `result` = `updated`/`created`/`failed` |
//! | `epcheck_apiserver_requests_total` | counter | `verb`, `code` (HTTP status or `error`) |
//! | `epcheck_apiserver_request_duration_seconds` | histogram, 1 ms – 30 s | `verb` |
//! | `epcheck_store_errors_total` | counter | |
//! | `epcheck_failsafe_active` | gauge | |
//! | `epcheck_leader` | gauge | |
//! | `epcheck_last_reconcile_timestamp_seconds` | gauge (unix seconds) | `service` |
//! | `epcheck_service_selector_owned` | gauge (1 while the Service has a selector and epcheck stands aside) | `service` |
//! | `epcheck_unconfigured_objects` | gauge (objects of this instance whose Service left the config, at the last look) | |
//! | `epcheck_build_info` | gauge = 1 | `version` |
//! | `epcheck_notifications_total` | counter | `channel` = `script`/`webhook`, `result` = `sent`/`failed`/`dropped` |
//! | `epcheck_consensus_views` | gauge (consensus, on the leader: views by state) | `state` = `fresh`/`abstaining`/`stale` |
//! | `epcheck_consensus_holding` | gauge (1 while every target holds its last written state: too few views count, or none can be read) | |
//! | `epcheck_consensus_disagreements` | gauge (targets on which the voting views disagree) | `service` |
//!
//! # Contract with the daemon
//!
//! * `epcheck_leader`: call [`Metrics::set_leader`]`(true)` at start when leader election is
//!   off, and on every gain or loss of the lease when it is on. It starts at 0.
//! * `epcheck_last_reconcile_timestamp_seconds`: [`ServiceMetrics::reconciled`] after **every**
//!   successful reconcile, including the ones that found the object already equal and wrote
//!   nothing. In steady state reconciles still happen at every `resync_interval` (reads), so a
//!   timestamp older than a few resyncs means the leader is stuck; the alert
//!   `EpcheckNotReconciling` relies on this. It stays 0 until the first success.
//! * `epcheck_endpoint_writes_total` counts writes (`updated`, `created`) and failed
//!   reconciles (`failed`: the read or the write failed), never no-ops.
//! * `epcheck_service_selector_owned` is 1 while the service's Service has a selector: its
//!   endpoints belong to the cluster's controllers, epcheck deleted its own EndpointSlices of
//!   it and writes nothing for it until the selector is gone. Such a reconcile is not counted
//!   as `failed`, and `epcheck_last_reconcile_timestamp_seconds` stays where it was.
//! * `epcheck_service_ready_endpoints` is the number of the service's targets that the Endpoints
//!   object lists as ready after the last successful reconcile (on followers: their own view, so
//!   alert rules join service-level series with `epcheck_leader == 1`).
//!
//! # Example
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use epcheck::metrics::Metrics;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::new();
//! metrics.register(&mut registry);
//! metrics.set_leader(true);
//!
//! let redis = metrics.service("redis");
//! redis.set_endpoints(2, 3);
//! let node = redis.target("node-01"); // resolve once, keep next to the target
//! node.set_health(probe_core::Health::Up);
//! ```

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_endpoints::RequestObserver;
use probe_core::{FailureKind, Health, ProbeOutcome};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod labels;

pub use labels::{
    Channel, Delivery, NotificationLabels, RequestLabels, ResultLabels, ServiceLabels, StatusCode,
    TargetLabels, TransitionLabels, VerbLabels, VersionLabels, ViewStateLabels,
};

/// Buckets of `epcheck_probe_duration_seconds`: 0.1 ms to 10 s in 1-2.5-5 steps.
pub const PROBE_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets of `epcheck_apiserver_request_duration_seconds`: 1 ms to 30 s.
pub const APISERVER_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type TimestampGauge = Gauge<f64, AtomicU64>;

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS)
}

fn apiserver_histogram() -> Histogram {
    Histogram::new(APISERVER_BUCKETS)
}

#[derive(Debug)]
struct Families {
    target_up: Family<TargetLabels, Gauge>,
    probes: Family<ResultLabels, Counter>,
    probe_duration: HistogramFamily<ServiceLabels>,
    slots_skipped: Family<ServiceLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    ready: Family<ServiceLabels, Gauge>,
    configured: Family<ServiceLabels, Gauge>,
    writes: Family<ResultLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<VerbLabels>,
    store_errors: Counter,
    failsafe: Gauge,
    leader: Gauge,
    unconfigured: Gauge,
    last_reconcile: Family<ServiceLabels, TimestampGauge>,
    selector_owned: Family<ServiceLabels, Gauge>,
    build_info: Family<VersionLabels, Gauge>,
    notifications: Family<NotificationLabels, Counter>,
    consensus_views: Family<ViewStateLabels, Gauge>,
    consensus_holding: Gauge,
    disagreements: Family<ServiceLabels, Gauge>,
}

/// All of epcheck's metric families. Cheap to clone: clones share the same series.
#[derive(Clone, Debug)]
pub struct Metrics {
    f: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the families, not yet registered; `epcheck_build_info` is set to 1 for this
    /// version, every other value starts at 0 (the notification series exist at 0 from here;
    /// per-service and per-target series once their handles are resolved).
    pub fn new() -> Self {
        let f = Families {
            target_up: Family::default(),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            slots_skipped: Family::default(),
            transitions: Family::default(),
            ready: Family::default(),
            configured: Family::default(),
            writes: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(apiserver_histogram),
            store_errors: Counter::default(),
            failsafe: Gauge::default(),
            leader: Gauge::default(),
            unconfigured: Gauge::default(),
            last_reconcile: Family::default(),
            selector_owned: Family::default(),
            build_info: Family::default(),
            notifications: Family::default(),
            consensus_views: Family::default(),
            consensus_holding: Gauge::default(),
            disagreements: Family::default(),
        };
        f.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        // Every notification series exists from the start, so that `increase()` sees the
        // first failure.
        for channel in [Channel::Script, Channel::Webhook] {
            for result in [Delivery::Sent, Delivery::Failed, Delivery::Dropped] {
                let _ = f
                    .notifications
                    .get_or_create_owned(&NotificationLabels { channel, result });
            }
        }
        // The consensus views' series exist from the start (at 0 without consensus), so the
        // alert rules' names are always exported.
        for state in ["fresh", "abstaining", "stale"] {
            let _ = f
                .consensus_views
                .get_or_create_owned(&ViewStateLabels { state });
        }
        Metrics { f: Arc::new(f) }
    }

    /// Registers every family into `registry` (call once per registry). Names are given without
    /// the `_total` suffix that the encoder adds to counters, and seconds as a unit.
    pub fn register(&self, registry: &mut Registry) {
        let f = &self.f;
        registry.register(
            "epcheck_target_up",
            "Whether the target passes its health check (1) or not (0, also before its first probe)",
            f.target_up.clone(),
        );
        registry.register(
            "epcheck_probes",
            "Probes finished, by result: up, or the failure kind (refused, timeout, unreachable, unexpected_reply, exit_status, other)",
            f.probes.clone(),
        );
        registry.register_with_unit(
            "epcheck_probe_duration",
            "Time one probe took, per service",
            Unit::Seconds,
            f.probe_duration.clone(),
        );
        registry.register(
            "epcheck_probe_slots_skipped",
            "Regular probe slots skipped because the probes did not keep up (no permit was free before the next slot): raise probe.concurrency or the interval",
            f.slots_skipped.clone(),
        );
        registry.register(
            "epcheck_target_transitions",
            "Health transitions of a target, by the state entered",
            f.transitions.clone(),
        );
        registry.register(
            "epcheck_service_ready_endpoints",
            "Targets of the service listed as ready in its Endpoints after the last successful reconcile",
            f.ready.clone(),
        );
        registry.register(
            "epcheck_service_configured_endpoints",
            "Targets configured for the service",
            f.configured.clone(),
        );
        registry.register(
            "epcheck_endpoint_writes",
            "Endpoints writes (updated, created) and failed reconciles (failed); no-ops are not counted",
            f.writes.clone(),
        );
        registry.register(
            "epcheck_apiserver_requests",
            "HTTP requests to the ApiServer, retries included, by method and status code (error = no response)",
            f.requests.clone(),
        );
        registry.register_with_unit(
            "epcheck_apiserver_request_duration",
            "Time one ApiServer request took, by method",
            Unit::Seconds,
            f.request_duration.clone(),
        );
        registry.register(
            "epcheck_store_errors",
            "Failed operations on the state store",
            f.store_errors.clone(),
        );
        registry.register(
            "epcheck_failsafe_active",
            "Whether the fail-safe holds every write because all probes failed (1) or not (0)",
            f.failsafe.clone(),
        );
        registry.register(
            "epcheck_leader",
            "Whether this replica is the one that writes (1, also when leader election is off) or not (0)",
            f.leader.clone(),
        );
        registry.register_with_unit(
            "epcheck_last_reconcile_timestamp",
            "Unix time of the last successful reconcile of the service, unchanged objects included",
            Unit::Seconds,
            f.last_reconcile.clone(),
        );
        registry.register(
            "epcheck_service_selector_owned",
            "Whether the Service has a selector, so that its endpoints belong to the cluster's controllers and epcheck does not manage it (1) or not (0)",
            f.selector_owned.clone(),
        );
        registry.register(
            "epcheck_unconfigured_objects",
            "Endpoints objects and EndpointSlices labelled with this epcheck instance whose Service is no longer in the config, so that nothing keeps them current (epcheck prune or prune: true hands them back)",
            f.unconfigured.clone(),
        );
        registry.register(
            "epcheck_build_info",
            "Always 1, labelled with the epcheck version",
            f.build_info.clone(),
        );
        registry.register(
            "epcheck_notifications",
            "Notifications by channel and result",
            f.notifications.clone(),
        );
        registry.register(
            "epcheck_consensus_views",
            "Consensus, on the leader: replicas' views that count (fresh, this replica's included), of those the ones that abstain, and the ones that do not count (stale)",
            f.consensus_views.clone(),
        );
        registry.register(
            "epcheck_consensus_holding",
            "Consensus, on the leader: every target holds its last written state because too few views count or none can be read (1) or not (0)",
            f.consensus_holding.clone(),
        );
        registry.register(
            "epcheck_consensus_disagreements",
            "Consensus, on the leader: targets of the service on which the voting replicas disagree",
            f.disagreements.clone(),
        );
    }

    /// Sets the consensus gauges from the leader's last read of the views.
    pub fn set_consensus(
        &self,
        report: &k8s_endpoints::daemon::ConsensusReport,
        services: &[Arc<str>],
    ) {
        let f = &self.f;
        for (state, n) in [
            ("fresh", report.fresh),
            ("abstaining", report.abstaining),
            ("stale", report.stale),
        ] {
            f.consensus_views
                .get_or_create(&ViewStateLabels { state })
                .set(saturating_i64(n));
        }
        f.consensus_holding.set(i64::from(report.holding));
        for (service, n) in services.iter().zip(&report.disagreements) {
            f.disagreements
                .get_or_create(&ServiceLabels {
                    service: service.clone(),
                })
                .set(saturating_i64(*n));
        }
    }

    /// Resolves the handles of service `service` (creating its series). Call at start-up and
    /// keep the handle; calling again for the same key returns handles to the same series.
    pub fn service(&self, service: &str) -> ServiceMetrics {
        let service: Arc<str> = Arc::from(service);
        let f = &self.f;
        let labels = ServiceLabels {
            service: service.clone(),
        };
        let result = |result: &'static str| ResultLabels {
            service: service.clone(),
            result,
        };
        let failed = FailureKind::ALL.map(|k| f.probes.get_or_create_owned(&result(k.as_str())));
        let inner = ServiceInner {
            probes_up: f.probes.get_or_create_owned(&result("up")),
            probes_failed: failed,
            probe_duration: f.probe_duration.get_or_create_owned(&labels),
            slots_skipped: f.slots_skipped.get_or_create_owned(&labels),
            ready: f.ready.get_or_create_owned(&labels),
            configured: f.configured.get_or_create_owned(&labels),
            updated: f.writes.get_or_create_owned(&result("updated")),
            created: f.writes.get_or_create_owned(&result("created")),
            failed: f.writes.get_or_create_owned(&result("failed")),
            last_reconcile: f.last_reconcile.get_or_create_owned(&labels),
            selector_owned: f.selector_owned.get_or_create_owned(&labels),
            name: service,
            metrics: self.clone(),
        };
        ServiceMetrics {
            inner: Arc::new(inner),
        }
    }

    /// [`service`](Self::service)`(service)`[`.target`](ServiceMetrics::target)`(target)`;
    /// prefer resolving the service once when it has many targets.
    pub fn target(&self, service: &str, target: &str) -> TargetMetrics {
        self.service(service).target(target)
    }

    /// An observer to hand to `k8s_endpoints::Client::with_observer`: it counts every
    /// ApiServer request into `epcheck_apiserver_requests_total` and its duration into
    /// `epcheck_apiserver_request_duration_seconds`.
    pub fn apiserver_observer(&self) -> Arc<dyn RequestObserver> {
        Arc::new(ApiServerObserver {
            metrics: self.clone(),
        })
    }

    /// Counts one failed state-store operation.
    pub fn store_error(&self) {
        self.f.store_errors.inc();
    }

    /// Sets `epcheck_failsafe_active`.
    pub fn set_failsafe_active(&self, active: bool) {
        self.f.failsafe.set(i64::from(active));
    }

    /// Sets `epcheck_leader`: `true` when this replica writes (always, without leader election).
    pub fn set_leader(&self, leader: bool) {
        self.f.leader.set(i64::from(leader));
    }

    /// Sets `epcheck_unconfigured_objects`.
    pub fn set_unconfigured(&self, objects: usize) {
        self.f
            .unconfigured
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Counts one notification on `channel` that ended as `result`.
    pub fn notification(&self, channel: Channel, result: Delivery) {
        self.f
            .notifications
            .get_or_create(&NotificationLabels { channel, result })
            .inc();
    }

    fn observe_request(&self, verb: &str, code: Option<u16>, duration: Duration) {
        let verb = static_verb(verb);
        let code = StatusCode(code);
        self.f
            .requests
            .get_or_create(&RequestLabels {
                verb: verb.clone(),
                code,
            })
            .inc();
        self.f
            .request_duration
            .get_or_create(&VerbLabels { verb })
            .observe(duration.as_secs_f64());
    }
}

/// The methods epcheck sends as static strings, so that counting a request allocates nothing.
fn static_verb(verb: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 5] = ["GET", "PUT", "POST", "PATCH", "DELETE"];
    match KNOWN.iter().find(|k| **k == verb) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(verb.to_owned()),
    }
}

/// The [`RequestObserver`] returned by [`Metrics::apiserver_observer`].
#[derive(Clone, Debug)]
pub struct ApiServerObserver {
    metrics: Metrics,
}

impl RequestObserver for ApiServerObserver {
    fn on_request(&self, verb: &str, code: Option<u16>, duration: Duration) {
        self.metrics.observe_request(verb, code, duration);
    }
}

#[derive(Debug)]
struct ServiceInner {
    name: Arc<str>,
    metrics: Metrics,
    probes_up: Counter,
    probes_failed: [Counter; FailureKind::ALL.len()],
    probe_duration: Histogram,
    slots_skipped: Counter,
    ready: Gauge,
    configured: Gauge,
    updated: Counter,
    created: Counter,
    failed: Counter,
    last_reconcile: TimestampGauge,
    selector_owned: Gauge,
}

/// Pre-resolved series of one service, from [`Metrics::service`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    inner: Arc<ServiceInner>,
}

impl ServiceMetrics {
    /// Resolves the handles of one of this service's targets (creating its
    /// `epcheck_target_up` series at 0 and its transition counters).
    pub fn target(&self, target: &str) -> TargetMetrics {
        let f = &self.inner.metrics.f;
        let target: Arc<str> = Arc::from(target);
        let service = self.inner.name.clone();
        let to = |to: &'static str| TransitionLabels {
            service: service.clone(),
            target: target.clone(),
            to,
        };
        TargetMetrics {
            up: f.target_up.get_or_create_owned(&TargetLabels {
                service: service.clone(),
                target: target.clone(),
            }),
            to_up: f.transitions.get_or_create_owned(&to("up")),
            to_down: f.transitions.get_or_create_owned(&to("down")),
            service: self.clone(),
        }
    }

    /// Counts one probe of a target of this service: `epcheck_probes_total` by result and
    /// `epcheck_probe_duration_seconds`.
    pub fn probe(&self, outcome: &ProbeOutcome) {
        let s = &self.inner;
        if outcome.up {
            s.probes_up.inc();
        } else {
            let kind = outcome.failure_kind().unwrap_or(FailureKind::Other);
            let i = FailureKind::ALL.iter().position(|k| *k == kind);
            // `Other` is last in `ALL`; a kind added later is counted there.
            let i = i.unwrap_or(FailureKind::ALL.len() - 1);
            if let Some(counter) = s.probes_failed.get(i) {
                counter.inc();
            }
        }
        s.probe_duration.observe(outcome.latency.as_secs_f64());
    }

    /// Counts `count` regular probe slots of the service's targets skipped for want of a
    /// permit (`epcheck_probe_slots_skipped_total`).
    pub fn slots_skipped(&self, count: u32) {
        self.inner.slots_skipped.inc_by(u64::from(count));
    }

    /// Sets `epcheck_service_ready_endpoints` and `epcheck_service_configured_endpoints`.
    pub fn set_endpoints(&self, ready: usize, configured: usize) {
        self.inner.ready.set(saturating_i64(ready));
        self.inner.configured.set(saturating_i64(configured));
    }

    /// A reconcile succeeded at `at` with `action`: counts a write when something was written
    /// (`updated`, `created`) and sets `epcheck_last_reconcile_timestamp_seconds` in every case,
    /// unchanged included (see the module docs for why).
    pub fn reconciled(&self, action: k8s_endpoints::ReconcileAction, at: SystemTime) {
        use k8s_endpoints::ReconcileAction as A;
        match action {
            A::Updated => self.inner.updated.inc(),
            A::Created => self.inner.created.inc(),
            _ => 0,
        };
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.inner.last_reconcile.set(secs);
    }

    /// A reconcile failed (reading, writing, or refused): counts `result="failed"`.
    pub fn reconcile_failed(&self) {
        self.inner.failed.inc();
    }

    /// Sets `epcheck_service_selector_owned`: the Service has (1) or no longer has (0) a
    /// selector, so that the cluster's controllers own its endpoints and epcheck stands aside.
    pub fn set_selector_owned(&self, owned: bool) {
        self.inner.selector_owned.set(i64::from(owned));
    }

    /// The service key.
    pub fn name(&self) -> Arc<str> {
        self.inner.name.clone()
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Pre-resolved series of one target, from [`ServiceMetrics::target`]. Cheap to clone; the
/// methods allocate nothing.
#[derive(Clone, Debug)]
pub struct TargetMetrics {
    service: ServiceMetrics,
    up: Gauge,
    to_up: Counter,
    to_down: Counter,
}

impl TargetMetrics {
    /// Counts one probe of this target (into its service's probe counters and histogram).
    pub fn probe(&self, outcome: &ProbeOutcome) {
        self.service.probe(outcome);
    }

    /// Sets `epcheck_target_up` from the target's health (`unknown` counts as 0); use it for a
    /// state restored from the store.
    pub fn set_health(&self, health: Health) {
        self.up.set(i64::from(health == Health::Up));
    }

    /// A transition into `to`: counts it and sets `epcheck_target_up`. A transition into
    /// `unknown` (which the state machine does not make) only sets the gauge.
    pub fn transition(&self, to: Health) {
        match to {
            Health::Up => self.to_up.inc(),
            Health::Down => self.to_down.inc(),
            _ => 0,
        };
        self.set_health(to);
    }

    /// The handles of this target's service.
    pub fn service(&self) -> &ServiceMetrics {
        &self.service
    }
}

#[cfg(test)]
mod tests;
