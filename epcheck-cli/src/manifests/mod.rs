//! Kubernetes manifests that deploy epcheck for a given config (SPEC §10): what
//! `epcheck manifests` prints and what the files under `deploy/` are generated from.
//!
//! [`manifests`] is pure: it turns a checked [`Config`] and [`ManifestOptions`] into Kubernetes
//! objects (as JSON values), in the order they should be applied:
//!
//! | object | notes |
//! | --- | --- |
//! | `Namespace` | labelled for the `restricted` Pod Security Standard, which the pod meets |
//! | `ServiceAccount` | its token is automounted: epcheck reads it when `token_file` is empty |
//! | `Role` + `RoleBinding` per namespace written to | least privilege, see below |
//! | `Lease` | only with leader election on a Lease: created here so `create` is never needed |
//! | `Secret` | only when the config holds a secret: a `CHANGE-ME` placeholder, never the value |
//! | `ConfigMap` | the config, adapted for the pod ([`notes`] says how) |
//! | `Deployment` | non-root, read-only root filesystem, probes on `/healthz` and `/readyz` |
//! | `Service` | the metrics port, for scraping |
//! | `ServiceMonitor`, `PrometheusRule`, `KuberhealthyCheck` | each when asked for |
//!
//! # RBAC
//!
//! A writable Endpoints object can send a Service's traffic to any address, including pods of
//! other namespaces that the writer could not reach otherwise (CVE-2021-25740). So epcheck gets
//! no ClusterRole, no wildcard and no `list`/`watch` on Endpoints: in each namespace it writes
//! to, one Role grants `get`, `update` and `create` on exactly the Endpoints objects its
//! services own (`resourceNames`). epcheck creates a missing Endpoints object with a `PUT` to
//! the object's own URL, which the ApiServer authorises as a `create` *of that name*; a `POST`
//! to the collection could not be restricted by name. `services` `get` (named) lets it refuse
//! an Endpoints object that a selector's controller owns. Leases (`get`, `update`, named
//! `create`) appear only with leader election on the Lease backend. EndpointSlices cannot be
//! name-restricted (`list` never can, and the number of slices a Service had is not bounded by
//! the config): in `mode: endpointslice` epcheck gets `get`, `list`, `create`, `update` and
//! `delete` on them.
//!
//! In `mode: endpoints` it gets `list`, `update` and `delete` on endpointslices, in the same
//! namespaces (those of its services) and nowhere else. That is the choice of issue 20: a
//! Service switched back from `mode: endpointslice` still has the slices epcheck wrote, which
//! kube-proxy reads, and only epcheck knows to keep them current until the mirroring
//! controller's slices show the healthy set and then delete them (SPEC §9). A Role without
//! these verbs would leave them frozen at the old state — traffic to dead backends — on the
//! very path a user takes to undo slice mode, and redeploying with the printed manifests is
//! that path. `create` is left out: in this mode epcheck never adds a slice, so it cannot
//! point a Service at a new address through one; `get` is left out because nothing reads a
//! single slice. A deployment that never used slice mode pays one refused-or-empty `list` per
//! Service at start-up; one that withholds the verbs gets a single error naming them, and its
//! Endpoints are written all the same.
//!
//! ```
//! use epcheck::config::{ProcessEnv, check};
//! use epcheck::manifests::{ManifestOptions, manifests, to_yaml_stream};
//!
//! let text = fixtures::configs::SEED_CONFIG;
//! let loaded = check(text, std::path::Path::new("config.yaml"), &ProcessEnv)?;
//! let opts = ManifestOptions::for_config(&loaded.config, text);
//! let docs = manifests(&loaded.config, &opts);
//! let yaml = to_yaml_stream(&docs);
//! assert!(yaml.contains("kind: RoleBinding"));
//! # Ok::<(), epcheck::config::ConfigError>(())
//! ```

mod config_text;
mod extras;
mod rbac;
mod workload;
mod yaml;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::config::Config;

pub use rbac::{NamespaceAccess, written_namespaces};
pub use yaml::{DeployFile, deploy_files, to_yaml_stream};

/// Name of the ServiceAccount, Roles, RoleBindings, Deployment and most other objects.
pub const NAME: &str = "epcheck";

/// Name of the ConfigMap holding the config.
pub const CONFIG_MAP: &str = "epcheck-config";

/// Name of the Secret that the Deployment reads secrets from (placeholders when generated).
pub const SECRET: &str = "epcheck-secrets";

/// Where the ConfigMap is mounted in the pod.
pub const CONFIG_DIR: &str = "/etc/epcheck";

/// The config file's path in the pod.
pub const CONFIG_PATH: &str = "/etc/epcheck/config.yaml";

/// The metrics port used when the config does not set `metrics.listen`.
pub use crate::config::DEFAULT_METRICS_PORT;

/// The value written instead of a real secret.
pub const PLACEHOLDER: &str = "CHANGE-ME";

/// The user and group the container runs as (distroless's `nonroot`).
pub const RUN_AS: u32 = 65532;

/// The alert rules shipped with epcheck (`deploy/prometheus/alerts.yaml`), for
/// [`ManifestOptions::prometheus_rule`].
pub const ALERT_RULES: &str = include_str!("../../../deploy/prometheus/alerts.yaml");

/// The image used when none is given: this version of epcheck.
pub fn default_image() -> String {
    format!("ghcr.io/epcheck/epcheck:{}", env!("CARGO_PKG_VERSION"))
}

/// What to generate besides what the config decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Namespace epcheck itself runs in (default `epcheck`).
    pub namespace: String,
    /// Container image (default [`default_image`]).
    pub image: String,
    /// The config file as loaded; it goes into the ConfigMap, adapted for the pod (secrets
    /// removed, `token_file`/`ca_file` dropped, `metrics.listen` on all interfaces).
    pub config_text: String,
    /// Also emit a `ServiceMonitor` (Prometheus Operator).
    pub service_monitor: bool,
    /// Also emit a `PrometheusRule` whose `spec` is this Prometheus rules file (the text of
    /// `deploy/prometheus/alerts.yaml`, a `groups:` document). Skipped, with a note, when it
    /// does not parse.
    pub prometheus_rule: Option<String>,
    /// Also emit a `KuberhealthyCheck` that runs `epcheck khcheck`.
    pub kuberhealthy: bool,
    /// Deployment replicas. More than one only with leader election enabled: without it the
    /// Deployment gets 1 (and [`notes`] says so), since every replica would write.
    pub replicas: u32,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            namespace: NAME.to_string(),
            image: default_image(),
            config_text: String::new(),
            service_monitor: false,
            prometheus_rule: None,
            kuberhealthy: false,
            replicas: 1,
        }
    }
}

impl ManifestOptions {
    /// The defaults for `config`, whose file text is `config_text`: three replicas with
    /// consensus (a majority of two is both, so any disagreement would hold), two with leader
    /// election alone, one otherwise.
    pub fn for_config(config: &Config, config_text: impl Into<String>) -> Self {
        let replicas = match (config.leader_election.enabled, config.consensus.enabled) {
            (true, true) => 3,
            (true, false) => 2,
            (false, _) => 1,
        };
        ManifestOptions {
            config_text: config_text.into(),
            replicas,
            ..ManifestOptions::default()
        }
    }

    /// The replicas the Deployment gets: [`replicas`](Self::replicas), but 1 without leader
    /// election, and never 0.
    pub fn effective_replicas(&self, config: &Config) -> u32 {
        if config.leader_election.enabled {
            self.replicas.max(1)
        } else {
            1
        }
    }
}

/// The objects that deploy epcheck for `config`, in the order to apply them.
pub fn manifests(config: &Config, opts: &ManifestOptions) -> Vec<Value> {
    let adapted = config_text::adapt(&opts.config_text, config);
    let mut docs = vec![
        rbac::namespace(&opts.namespace),
        rbac::service_account(&opts.namespace),
    ];
    let role = rbac::role_name(&config.instance);
    for (ns, access) in written_namespaces(config, &opts.namespace) {
        docs.push(rbac::role(&ns, &role, &access));
        docs.push(rbac::role_binding(&ns, &role, &opts.namespace));
    }
    if let Some(lease) = rbac::lease(config, &opts.namespace) {
        docs.push(lease);
    }
    let secrets = workload::secrets(config);
    if let Some(secret) = workload::secret(&opts.namespace, &secrets) {
        docs.push(secret);
    }
    docs.push(workload::config_map(&opts.namespace, &adapted.text));
    docs.push(workload::deployment(config, opts, &adapted.text, &secrets));
    docs.push(workload::metrics_service(
        &opts.namespace,
        metrics_port(config),
    ));
    if opts.service_monitor {
        docs.push(extras::service_monitor(&opts.namespace));
    }
    if let Some(rules) = opts.prometheus_rule.as_deref()
        && let Ok(rule) = extras::prometheus_rule(&opts.namespace, rules)
    {
        docs.push(rule);
    }
    if opts.kuberhealthy {
        docs.push(extras::kuberhealthy_check(opts));
    }
    docs
}

/// What an operator should know about the generated objects: how the config was adapted for
/// the pod, replicas reduced, inputs skipped. One sentence each; print them on stderr.
pub fn notes(config: &Config, opts: &ManifestOptions) -> Vec<String> {
    let mut notes = config_text::adapt(&opts.config_text, config).changes;
    if workload::has_secret(&workload::secrets(config)) {
        notes.push(format!(
            "Secret {SECRET} holds the placeholder {PLACEHOLDER}: put the real values in it \
             before applying (kubectl -n {} create secret generic {SECRET} ...)",
            opts.namespace
        ));
    }
    let (tls_files, unmountable) = workload::etcd_tls_files(config, &opts.config_text);
    if !tls_files.is_empty() {
        let from: Vec<String> = tls_files
            .iter()
            .map(|(key, path)| format!("--from-file={key}={path}"))
            .collect();
        notes.push(format!(
            "the etcd TLS files are mounted from Secret {}, which you create: kubectl -n {} \
             create secret generic {} {}",
            workload::ETCD_TLS_SECRET,
            opts.namespace,
            workload::ETCD_TLS_SECRET,
            from.join(" ")
        ));
    }
    for option in unmountable {
        notes.push(format!(
            "{option} is relative or inside {CONFIG_DIR}, so it cannot be mounted where the \
             config says: give it an absolute path outside {CONFIG_DIR} (e.g. \
             /etc/epcheck-etcd/ca.crt) and run manifests again"
        ));
    }
    if opts.replicas > 1 && !config.leader_election.enabled {
        notes.push(format!(
            "{} replicas asked for, but leader_election is not enabled: every replica would \
             write, so the Deployment has 1",
            opts.replicas
        ));
    }
    if config.consensus.enabled && config.leader_election.enabled && opts.replicas < 3 {
        notes.push(format!(
            "consensus is enabled with {} replicas: with fewer than 3 the leader cannot be \
             outvoted (one replica decides alone; two must both agree, so any disagreement \
             holds); use --replicas 3 or more, on different nodes",
            opts.replicas
        ));
    }
    if let Some(rules) = opts.prometheus_rule.as_deref()
        && let Err(e) = extras::prometheus_rule(&opts.namespace, rules)
    {
        notes.push(format!("the PrometheusRule was left out: {e}"));
    }
    if let Some(script) = &config.notify.script {
        notes.push(format!(
            "notify.script {} is not in the image: mount it into the pod (a ConfigMap with \
             defaultMode 0555, or an image built on this one)",
            script.display()
        ));
    }
    notes
}

/// The port of the metrics and health server in the pod.
pub fn metrics_port(config: &Config) -> u16 {
    config
        .metrics
        .listen
        .map(|a| a.port())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_METRICS_PORT)
}

/// The labels every object carries; the Deployment's selector is the first of them.
pub(crate) fn labels() -> Value {
    serde_json::json!({
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": NAME,
    })
}

/// The label selector of epcheck's pods.
pub(crate) fn selector() -> Value {
    serde_json::json!({ "app.kubernetes.io/name": NAME })
}
