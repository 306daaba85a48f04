//! The reports of `once` and `plan` (SPEC §7): one JSON schema, a text table, and YAML objects.

use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_endpoints::Endpoints;
use k8s_endpoints::slices::EndpointSlice;
use probe_core::{ProbeOutcome, Target};
use serde::Serialize;

/// What happened (or would happen) to one service's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The live object already matched.
    Unchanged,
    /// The live object was replaced.
    Updated,
    /// The object did not exist and was created.
    Created,
    /// `--dry-run`: the live object would be replaced.
    WouldUpdate,
    /// `--dry-run`: the object would be created.
    WouldCreate,
    /// Nothing written because the fail-safe holds (every probe failed: the checker's own
    /// network is the likelier fault).
    Held,
    /// The service could not be reconciled; see `error`.
    Failed,
    /// `plan`: the object shown would be written; the ApiServer was not asked whether it exists.
    Planned,
}

impl Action {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Updated => "updated",
            Action::Created => "created",
            Action::WouldUpdate => "would-update",
            Action::WouldCreate => "would-create",
            Action::Held => "held",
            Action::Failed => "failed",
            Action::Planned => "planned",
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// One entry per configured service, sorted by namespace, name and service key (see
    /// [`Report::sorted`]).
    pub services: Vec<ServiceReport>,
}

/// `1 service`, `2 services`: a count with its noun (regular English plurals only).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    /// The service key of the config.
    pub service: String,
    /// Namespace of its Endpoints object.
    pub namespace: String,
    /// Name of its Endpoints object.
    pub name: String,
    /// What happened.
    pub action: Action,
    /// IPs in `addresses`.
    pub ready: Vec<IpAddr>,
    /// IPs in `notReadyAddresses` (with `not_ready: keep`) or left out (with `drop`).
    pub not_ready: Vec<IpAddr>,
    /// Why the service failed or was held.
    pub error: Option<String>,
    /// Each target's probe result.
    pub targets: Vec<TargetReport>,
    /// The object written or planned (`plan` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// The EndpointSlices planned (`plan` with `mode: endpointslice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_slices: Option<Vec<EndpointSlice>>,
}

/// One target's probe result.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// Node name.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// Health-check port.
    pub port: u16,
    /// Whether the probe succeeded.
    pub up: bool,
    /// Probe latency in milliseconds.
    pub latency_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
}

impl TargetReport {
    /// From a target and its probe outcome.
    pub fn new(target: &Target, outcome: &ProbeOutcome) -> Self {
        TargetReport {
            name: target.name.to_string(),
            ip: target.ip,
            port: target.port,
            up: outcome.up,
            latency_ms: millis(outcome.latency),
            error: outcome.error.as_ref().map(|e| e.to_string()),
        }
    }
}

/// A duration in milliseconds, rounded to microseconds.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Report {
    /// A report of `services` in the order a reader looks them up: by namespace, then name,
    /// then service key (the config's order says nothing to someone reading the output).
    pub fn sorted(mut services: Vec<ServiceReport>) -> Self {
        services.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.service).cmp(&(&b.namespace, &b.name, &b.service))
        });
        Report { services }
    }

    /// A human table: one block per service, one line per target.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(
                out,
                "{} ({}/{}): {}  ready {}/{}",
                s.service,
                s.namespace,
                s.name,
                s.action.as_str(),
                s.ready.len(),
                s.targets.len()
            );
            if let Some(e) = &s.error {
                let _ = writeln!(out, "  ! {e}");
            }
            for t in &s.targets {
                let addr = std::net::SocketAddr::new(t.ip, t.port);
                let state = if t.up { "up" } else { "DOWN" };
                let _ = writeln!(
                    out,
                    "  {:<16} {:<40} {:<5} {:>9.3} ms  {}",
                    t.name,
                    addr,
                    state,
                    t.latency_ms,
                    t.error.as_deref().unwrap_or("")
                );
            }
        }
        out
    }

    /// `true` when no service failed.
    pub fn all_reconciled(&self) -> bool {
        self.services.iter().all(|s| s.action != Action::Failed)
    }
}
