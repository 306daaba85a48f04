//! The configuration: the original Go tool's `config.yaml`, unchanged, plus epcheck's optional keys.
//!
//! Loading reads the file once and parses it into a YAML tree (the raw form); [`check`] then
//! walks that tree key by key and builds the checked types below, collecting every error and
//! warning with its key path and line (a [`LineIndex`] maps key paths to lines). Nothing deeper
//! in epcheck sees an `Option` that validation could have settled.

mod diagnostic;
mod etcd;
mod limits;
mod lines;
mod locate;
mod probe;
#[cfg(test)]
mod proptests;
mod reader;
mod services;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_endpoints::{ContentType, EndpointPort, Endpoints, NotReadyPolicy, PathTemplate};
use probe_core::Check;
use secrecy::SecretString;

pub use diagnostic::{ConfigError, Diagnostic, Severity, log_warnings, warning_lines};
pub use limits::{MAX_BYTES, MAX_DEPTH};
pub use lines::LineIndex;
pub use locate::{default_candidates, locate};
pub use validate::{check, webhook_url_var};

/// The environment, read through a seam so tests never call `std::env::set_var`.
pub trait Environment: Send + Sync {
    /// The value of variable `key`, if set and valid UTF-8.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// A loaded, checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// `interval`: time between two probes of one target.
    pub interval: Duration,
    /// `pingtimeout`: timeout of one probe.
    pub timeout: Duration,
    /// `url`: the ApiServer base URL; `None` = in-cluster (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub url: Option<String>,
    /// `endpointapi`: the path template of one Endpoints object.
    pub endpoint_api: PathTemplate,
    /// `content_type`: body format of writes.
    pub content_type: ContentType,
    /// `token_file`: the raw setting (empty, `default` or a path), resolved by
    /// [`k8s_endpoints::token`] at use.
    pub token_file: String,
    /// `ca_file`: CA bundle for the ApiServer; `None` = the service-account `ca.crt` when present.
    pub ca_file: Option<PathBuf>,
    /// `insecure_skip_tls_verify`: skip TLS verification (warned about).
    pub insecure_skip_tls_verify: bool,
    /// `redis`: the Redis store; `None` = in-memory store (or etcd).
    pub redis: Option<RedisConfig>,
    /// `etcd`: the etcd store; never together with `redis`.
    pub etcd: Option<EtcdConfig>,
    /// The services, from `service_info` joined with `service_healthcheck_list`, sorted by key.
    pub services: Vec<ServiceConfig>,
    /// `endpoint_template`: the object created when none exists; its ports are the serving ports.
    pub endpoint_template: Endpoints,
    /// Probe settings shared by all services (per-service values are in [`ServiceConfig::probe`]).
    pub probe: ProbeSettings,
    /// `probe.concurrency`: probes in flight at once (also capped by the open-file limit).
    pub concurrency: usize,
    /// `failsafe`.
    pub failsafe: Failsafe,
    /// `resync_interval`: how often every owned object is re-read and repaired.
    pub resync_interval: Duration,
    /// `mode`.
    pub mode: Mode,
    /// `metrics`.
    pub metrics: MetricsConfig,
    /// `notify`.
    pub notify: NotifyConfig,
    /// `leader_election`.
    pub leader_election: LeaderElection,
    /// `instance`: the `epcheck.io/instance` label of every object written, so that two
    /// deployments never touch each other's objects (default: `leader_election.name`).
    pub instance: String,
    /// `prune`: the daemon hands back this instance's objects whose Service left the config
    /// (default off: they are only reported).
    pub prune: bool,
    /// `consensus`: multi-vantage consensus among replicas (SPEC §9.1).
    pub consensus: Consensus,
}

/// `consensus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consensus {
    /// A target leaves (or returns to) a Service only when a quorum of replicas agree.
    pub enabled: bool,
    /// Quorum and timings.
    pub settings: k8s_endpoints::consensus::ConsensusSettings,
}

impl Config {
    /// The service with key `key`.
    pub fn service(&self, key: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.key == key)
    }

    /// The renderer of `service`'s Endpoints object, labelled with this deployment's
    /// instance, with `not_ready` (the service's policy as the server allows it).
    ///
    /// # Errors
    /// As [`k8s_endpoints::Renderer::new`]; validation built the same renderer, so a loaded
    /// config does not fail here.
    pub fn renderer(
        &self,
        service: &ServiceConfig,
        not_ready: NotReadyPolicy,
    ) -> Result<k8s_endpoints::Renderer, k8s_endpoints::Error> {
        k8s_endpoints::Renderer::new(
            &self.endpoint_template,
            &service.namespace,
            &service.name,
            service.ports.clone(),
            not_ready,
        )
        .map(|r| r.with_instance(&self.instance))
    }

    /// The daemon's typed spec for this config (probe concurrency capped by the open-file
    /// limit, which this raises as far as allowed).
    pub fn daemon_spec(&self) -> k8s_endpoints::daemon::DaemonSpec {
        use k8s_endpoints::daemon::{DaemonSpec, FailsafeSpec, ServiceSpec};
        let services = self
            .services
            .iter()
            .map(|s| ServiceSpec {
                key: s.key.clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                ports: s.ports.clone(),
                not_ready: s.not_ready,
                check: s.probe.check.clone(),
                schedule: probe_core::ScheduleOptions {
                    interval: s.probe.interval,
                    fast_interval: s.probe.fast_interval,
                    jitter: s.probe.jitter,
                    timeout: s.probe.timeout,
                },
                rise: s.probe.rise,
                fall: s.probe.fall,
                targets: crate::round::service_targets(s),
            })
            .collect();
        let mut spec = DaemonSpec::new(self.endpoint_template.clone(), services);
        spec.mode = self.mode;
        spec.instance = self.instance.clone();
        spec.prune = self.prune;
        spec.interval = self.interval;
        spec.timeout = self.timeout;
        spec.fast_interval = self.probe.fast_interval;
        spec.jitter = self.probe.jitter;
        spec.concurrency = crate::effective_concurrency(self.concurrency);
        spec.resync_interval = self.resync_interval;
        spec.failsafe = FailsafeSpec {
            hold: self.failsafe.mode == FailsafeMode::Hold,
            min_targets: self.failsafe.min_targets,
            canary: self.failsafe.canary,
        };
        spec
    }

    /// The namespaces of the configured Services: the only ones epcheck writes to.
    pub fn namespaces(&self) -> std::collections::BTreeSet<String> {
        self.services.iter().map(|s| s.namespace.clone()).collect()
    }

    /// The configured `(namespace, Service name)` pairs.
    pub fn service_objects(&self) -> std::collections::BTreeSet<(String, String)> {
        self.services
            .iter()
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect()
    }

    /// Number of configured targets over all services.
    pub fn target_count(&self) -> usize {
        self.services.iter().map(|s| s.targets.len()).sum()
    }
}

/// One service: the Endpoints object it owns and the backends that should serve it.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The key used in `service_info` and `service_healthcheck_list`.
    pub key: String,
    /// Namespace of the Endpoints object.
    pub namespace: String,
    /// Name of the Endpoints object (and of its Service).
    pub name: String,
    /// Health-check port; `0` disables the TCP probe.
    pub port: u16,
    /// The backends.
    pub targets: Vec<TargetConfig>,
    /// Probe settings after per-service overrides.
    pub probe: ProbeSettings,
    /// Serving ports when they differ from the template's.
    pub ports: Option<Vec<EndpointPort>>,
    /// `not_ready` after the per-service override.
    pub not_ready: NotReadyPolicy,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Node name, unique within the service.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
}

/// Which probe a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP connect, optionally with send/expect.
    Tcp,
    /// HTTP GET.
    Http,
    /// Run a command.
    Exec,
}

/// Probe settings of one service (global defaults merged with its overrides).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    /// The probe kind.
    pub kind: ProbeKind,
    /// Consecutive successes before a down target is up again.
    pub rise: u32,
    /// Consecutive failures before an up target is down.
    pub fall: u32,
    /// Time between probes of one target.
    pub interval: Duration,
    /// Timeout of one probe.
    pub timeout: Duration,
    /// Time between re-probes of a target whose state is in doubt.
    pub fast_interval: Duration,
    /// Fraction of `interval` used to spread probes.
    pub jitter: f64,
    /// What a probe does (port 0 with no other check gives [`Check::Static`]).
    pub check: Check,
}

/// Redis store settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` or a `redis://` / `rediss://` URL.
    pub address: String,
    /// Password (from `password`, `password_file` or `EPCHECK_REDIS_PASSWORD`); never printed.
    pub password: Option<SecretString>,
    /// ACL user name.
    pub username: Option<String>,
    /// Database number.
    pub db: u8,
    /// Connect with TLS.
    pub tls: bool,
    /// Prefix of every key.
    pub key_prefix: String,
}

/// etcd store settings (SPEC §6).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// The members' client URLs (`https://host:port`, `http://host:port` or `host:port`).
    pub endpoints: Vec<String>,
    /// The etcd user.
    pub username: Option<String>,
    /// Password (from `password`, `password_file` or `EPCHECK_ETCD_PASSWORD`); never printed.
    pub password: Option<SecretString>,
    /// CA bundle of the members' serving certificates; `None` = the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (etcd's `--client-cert-auth`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key.
    pub key_file: Option<PathBuf>,
    /// Prefix of every key.
    pub key_prefix: String,
}

/// What the fail-safe does (SPEC §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failsafe {
    /// `hold` (default) or `off`.
    pub mode: FailsafeMode,
    /// The fail-safe only applies with at least this many targets.
    pub min_targets: usize,
    /// A target known to be up; while it fails nothing is written.
    pub canary: Option<SocketAddr>,
}

/// `failsafe.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailsafeMode {
    /// Write nothing while every target fails.
    Hold,
    /// No fail-safe.
    Off,
}

/// `mode`.
pub use k8s_endpoints::writer::Mode;

/// The port of the metrics and health server when `metrics.listen` does not say: 9087.
///
/// Not 9090 (the Prometheus server's own port), nor 9091-9095 (Pushgateway, Alertmanager,
/// Kafka, Grafana Loki/Mimir/Tempo gRPC), nor 9100-9999, which Prometheus' list of default
/// exporter ports has filled, so any port there is some exporter's default. The README's
/// "Metrics port" section says which ports were checked.
pub const DEFAULT_METRICS_PORT: u16 = 9087;

/// `metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Listen address of the metrics and health server (default `0.0.0.0:9087`, every
    /// interface: the kubelet's probes come to the pod IP); `None` = disabled (`listen: off`).
    pub listen: Option<SocketAddr>,
    /// `per_target`: export the series of each target (`epcheck_target_up` and its two
    /// transition counters, three series a target); `false` keeps the service-level ones only.
    pub per_target: bool,
}

/// `notify`.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Script run on every transition.
    pub script: Option<PathBuf>,
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
}

/// One webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// Body format.
    pub format: WebhookFormat,
    /// Signing secret (DingTalk); never printed.
    pub secret: Option<SecretString>,
}

/// Webhook body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// A JSON event.
    Json,
    /// A DingTalk robot text message.
    DingTalk,
}

/// `leader_election`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// Elect one writer among replicas.
    pub enabled: bool,
    /// Lease, Redis lock or etcd lock.
    pub backend: LeaderBackend,
    /// Lease / lock name.
    pub name: String,
    /// Lease namespace; `None` = `POD_NAMESPACE`, the token's namespace file, then `default`.
    pub namespace: Option<String>,
    /// Lease duration.
    pub lease_duration: Duration,
    /// A leader that cannot renew within this stops writing.
    pub renew_deadline: Duration,
    /// Time between attempts.
    pub retry_period: Duration,
}

/// `leader_election.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderBackend {
    /// A coordination.k8s.io/v1 Lease.
    Lease,
    /// A Redis lock key.
    Redis,
    /// An etcd key bound to an etcd lease.
    Etcd,
}

/// A config together with the warnings found while checking it.
#[derive(Debug)]
pub struct Loaded {
    /// The checked config.
    pub config: Config,
    /// Warnings (SPEC §3.4); `validate --strict` fails on them.
    pub warnings: Vec<Diagnostic>,
}

/// [`load`], with its warnings logged ([`log_warnings`]): what every command that acts on a
/// config starts with.
pub fn load_logged(path: &Path, env: &dyn Environment) -> Result<Config, ConfigError> {
    let Loaded { config, warnings } = load(path, env)?;
    log_warnings(&warnings, path);
    Ok(config)
}

/// Reads and checks the config at `path`.
pub fn load(path: &Path, env: &dyn Environment) -> Result<Loaded, ConfigError> {
    let read_error = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    // Refuse a huge file before reading it (a wrong path to a log or a disk image).
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > limits::MAX_BYTES as u64 {
        return Err(ConfigError::Invalid {
            file: path.to_path_buf(),
            errors: vec![limits::too_big(len)],
            warnings: vec![],
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    check(&text, path, env)
}
