//! What the daemon runs, as typed values built by code: no config file, no YAML tree.

use std::net::SocketAddr;
use std::time::Duration;

use probe_core::{Check, ScheduleOptions, Target};

use crate::render::{NotReadyPolicy, Renderer};
use crate::types::{EndpointPort, Endpoints};
use crate::writer::Mode;
use crate::{DEFAULT_INSTANCE, Error};

/// Everything the daemon needs to know; see [`DaemonSpec::new`] for the defaults.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    /// The services, each with its targets.
    pub services: Vec<ServiceSpec>,
    /// The Endpoints object created when none exists (labels, annotations, ports).
    pub template: Endpoints,
    /// What the healthy set is written to.
    pub mode: Mode,
    /// The `epcheck.io/instance` label of every object written.
    pub instance: String,
    /// Hand back this instance's objects whose Service is not in `services`.
    pub prune: bool,
    /// The base probe interval (the canary's, and the horizon for restoring health).
    pub interval: Duration,
    /// The base probe timeout.
    pub timeout: Duration,
    /// The base fast interval (the canary's).
    pub fast_interval: Duration,
    /// The base jitter (how long the first probe cycle may take).
    pub jitter: f64,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// How often every object is re-read and repaired, and unconfigured objects looked for.
    pub resync_interval: Duration,
    /// The fail-safe.
    pub failsafe: FailsafeSpec,
}

/// The fail-safe's settings (see [`probe_core::failsafe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsafeSpec {
    /// Hold every write while every probed target fails (`failsafe.mode: hold`).
    pub hold: bool,
    /// The rules apply from this many probed targets on.
    pub min_targets: usize,
    /// Something known to be up, probed beside the targets.
    pub canary: Option<SocketAddr>,
}

impl Default for FailsafeSpec {
    fn default() -> Self {
        FailsafeSpec {
            hold: true,
            min_targets: 3,
            canary: None,
        }
    }
}

/// One service: the object it keeps and the backends that should serve it.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// A key naming the service in logs, metrics and the store.
    pub key: String,
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service (and of its Endpoints object).
    pub name: String,
    /// Serving ports, instead of the template's.
    pub ports: Option<Vec<EndpointPort>>,
    /// What happens to failing targets.
    pub not_ready: NotReadyPolicy,
    /// How its targets are probed.
    pub check: Check,
    /// When its targets are probed.
    pub schedule: ScheduleOptions,
    /// Successes before a down target is up.
    pub rise: u32,
    /// Failures before an up target is down.
    pub fall: u32,
    /// The backends.
    pub targets: Vec<Target>,
}

impl DaemonSpec {
    /// A spec for `services` with `template`, writing v1 Endpoints as instance `epcheck`, with
    /// the defaults of the config file: interval 2 s, timeout 3 s, fast interval 200 ms,
    /// jitter 0.1, 1,024 probes in flight, a resync every 30 s, the fail-safe on from 3
    /// targets, no prune.
    pub fn new(template: Endpoints, services: Vec<ServiceSpec>) -> Self {
        DaemonSpec {
            services,
            template,
            mode: Mode::Endpoints,
            instance: DEFAULT_INSTANCE.to_owned(),
            prune: false,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(3),
            fast_interval: Duration::from_millis(200),
            jitter: 0.1,
            concurrency: 1024,
            resync_interval: Duration::from_secs(30),
            failsafe: FailsafeSpec::default(),
        }
    }

    /// The renderer of `service`'s object, labelled with the instance, with `not_ready` (the
    /// service's policy as the server allows it).
    ///
    /// # Errors
    /// As [`Renderer::new`].
    pub fn renderer(
        &self,
        service: &ServiceSpec,
        not_ready: NotReadyPolicy,
    ) -> Result<Renderer, Error> {
        Renderer::new(
            &self.template,
            &service.namespace,
            &service.name,
            service.ports.clone(),
            not_ready,
        )
        .map(|r| r.with_instance(&self.instance))
    }
}

impl ServiceSpec {
    /// A TCP-probed service `key` keeping `namespace/name`, with `targets`, probed every 2 s
    /// (timeout 3 s, rise 2, fall 3, failing targets kept as not ready).
    pub fn new(
        key: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        targets: Vec<Target>,
    ) -> Self {
        ServiceSpec {
            key: key.into(),
            namespace: namespace.into(),
            name: name.into(),
            ports: None,
            not_ready: NotReadyPolicy::Keep,
            check: Check::tcp(),
            schedule: ScheduleOptions {
                interval: Duration::from_secs(2),
                fast_interval: Duration::from_millis(200),
                jitter: 0.1,
                timeout: Duration::from_secs(3),
            },
            rise: 2,
            fall: 3,
            targets,
        }
    }
}
