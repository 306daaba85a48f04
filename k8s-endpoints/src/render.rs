//! Rendering the desired Endpoints object from the template and the probe results (SPEC §5.3).
//!
//! A [`Renderer`] is built once per service at start-up, from the `endpoint_template`, the
//! service's namespace and name, its optional `ports` and the `not_ready` policy; everything
//! that could be wrong is checked then. [`Renderer::render`] is then infallible and cheap.
//!
//! * `addresses` = the ready IPs, sorted and deduplicated; `notReadyAddresses` = the rest
//!   (an IP listed as both is ready), or nothing with [`NotReadyPolicy::Drop`];
//! * exactly one subset, or `subsets: []` when there is no address at all (an empty subset is
//!   invalid);
//! * ports: the live object's (so that an operator's edit of the live ports is kept), else the
//!   service's `ports`, else the template's, merged and deduplicated across its subsets.
//!
//! [`apply_to_live`] turns the rendered object into the body of a `PUT`: the live object with
//! only `subsets` replaced.
//!
//! The `app.kubernetes.io/managed-by: epcheck` label is added when the object has no
//! `app.kubernetes.io/managed-by` label. A label that names another manager (e.g. `Helm`, which
//! created the object from a chart) is left alone: overwriting it would make that tool refuse
//! or undo the change, and the two would fight over it on every resync.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::instance::{INSTANCE_LABEL, instance_of};
use crate::path::{check_name, check_namespace, validate_namespace};
use crate::types::{
    ENDPOINTS_API_VERSION, ENDPOINTS_KIND, EndpointAddress, EndpointPort, EndpointSubset, Endpoints,
};

/// The label that says who manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// epcheck's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "epcheck";

/// What happens to targets that fail their probes (`not_ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotReadyPolicy {
    /// Failing targets are written to `notReadyAddresses` (the default).
    #[default]
    Keep,
    /// Failing targets are removed, as the original tool did.
    Drop,
}

impl NotReadyPolicy {
    /// `keep` or `drop`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Drop => "drop",
        }
    }
}

impl fmt::Display for NotReadyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotReadyPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keep" => Ok(Self::Keep),
            "drop" => Ok(Self::Drop),
            _ => Err(Error::InvalidNotReadyPolicy {
                value: s.to_owned(),
            }),
        }
    }
}

/// Who an object says manages it, from [`MANAGED_BY_LABEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedBy {
    /// The label is `epcheck`.
    Epcheck,
    /// There is no such label.
    Absent,
    /// The label names another manager.
    Other(String),
}

/// Reads [`MANAGED_BY_LABEL`] of an object.
pub fn managed_by(endpoints: &Endpoints) -> ManagedBy {
    match endpoints.metadata.labels.get(MANAGED_BY_LABEL) {
        None => ManagedBy::Absent,
        Some(v) if v == MANAGED_BY_VALUE => ManagedBy::Epcheck,
        Some(v) => ManagedBy::Other(v.clone()),
    }
}

/// Adds `app.kubernetes.io/managed-by: epcheck` unless the label is already there (with any
/// value; see the module docs).
pub fn ensure_managed_by_label(endpoints: &mut Endpoints) {
    endpoints
        .metadata
        .labels
        .entry(MANAGED_BY_LABEL.to_owned())
        .or_insert_with(|| MANAGED_BY_VALUE.to_owned());
}

/// The label that keeps the endpointslice-mirroring controller from mirroring an Endpoints
/// object into EndpointSlices.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Labels an Endpoints object `endpointslice.kubernetes.io/skip-mirror: "true"`, for a Service
/// whose EndpointSlices epcheck writes itself (`mode: endpointslice`): without it the mirroring
/// controller would add slices of its own with the same addresses (SPEC §9). Returns whether
/// the label was missing or different, i.e. whether the live object needs a write for it.
pub fn mark_skip_mirror(endpoints: &mut Endpoints) -> bool {
    let labels = &mut endpoints.metadata.labels;
    let changed = labels.get(SKIP_MIRROR_LABEL).map(String::as_str) != Some("true");
    labels.insert(SKIP_MIRROR_LABEL.to_owned(), "true".to_owned());
    changed
}

/// Renders the desired Endpoints object of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Renderer {
    /// The template with name and namespace set, server-owned metadata removed and no subsets.
    base: Endpoints,
    /// The configured serving ports: the service's `ports`, else the template's.
    ports: Vec<EndpointPort>,
    policy: NotReadyPolicy,
}

impl Renderer {
    /// Prepares rendering for the object `namespace/name`.
    ///
    /// The template's `metadata.name` and `namespace` are replaced; its labels, annotations and
    /// owner references are kept for objects that epcheck creates; server-owned metadata
    /// (`resourceVersion`, `uid`, `creationTimestamp`, `generation`, `managedFields`,
    /// `selfLink`, deletion fields) is dropped, since a create carrying it is refused.
    /// `ports`, when `Some` and not empty, replaces the template's ports.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::InvalidTemplate`]
    /// when the template's `kind`/`apiVersion` is not `Endpoints`/`v1` or the effective ports
    /// fail [`validate_ports`].
    pub fn new(
        template: &Endpoints,
        namespace: &str,
        name: &str,
        ports: Option<Vec<EndpointPort>>,
        policy: NotReadyPolicy,
    ) -> Result<Self, Error> {
        check_namespace(namespace)?;
        check_name(name)?;
        let object = format!("{namespace}/{name}");
        let fail = |problem: String| Error::InvalidTemplate {
            object: object.clone(),
            problem,
        };
        for (field, got, want) in [
            ("kind", &template.kind, ENDPOINTS_KIND),
            ("apiVersion", &template.api_version, ENDPOINTS_API_VERSION),
        ] {
            if !got.is_empty() && got != want {
                return Err(fail(format!(
                    "endpoint_template has {field} {got:?}; expected {want:?}"
                )));
            }
        }
        let (ports, source) = match ports {
            Some(ports) if !ports.is_empty() => (dedup_ports(ports), "the service's ports"),
            _ => (merged_ports(template), "endpoint_template"),
        };
        validate_ports(&ports).map_err(|p| fail(format!("{source}: {p}")))?;

        let mut base = template.clone();
        base.api_version = ENDPOINTS_API_VERSION.to_owned();
        base.kind = ENDPOINTS_KIND.to_owned();
        base.subsets.clear();
        let meta = &mut base.metadata;
        meta.name = Some(name.to_owned());
        meta.namespace = Some(namespace.to_owned());
        meta.generate_name = None;
        meta.uid = None;
        meta.resource_version = None;
        meta.generation = None;
        meta.creation_timestamp = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        meta.managed_fields.clear();
        meta.extra.remove("selfLink");
        ensure_managed_by_label(&mut base);
        Ok(Self {
            base,
            ports,
            policy,
        })
    }

    /// Labels every rendered object `epcheck.io/instance: <instance>`, the epcheck deployment
    /// that manages it ([`crate::instance`]). The caller checks the value with
    /// [`validate_instance`](crate::validate_instance).
    #[must_use]
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.base
            .metadata
            .labels
            .insert(INSTANCE_LABEL.to_owned(), instance.to_owned());
        self
    }

    /// The instance set with [`with_instance`](Self::with_instance), if any.
    pub fn instance(&self) -> Option<&str> {
        instance_of(&self.base.metadata.labels)
    }

    /// The namespace of the rendered object.
    pub fn namespace(&self) -> &str {
        self.base.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The name of the rendered object.
    pub fn name(&self) -> &str {
        self.base.metadata.name.as_deref().unwrap_or_default()
    }

    /// The configured serving ports (used when the live object has none).
    pub fn ports(&self) -> &[EndpointPort] {
        &self.ports
    }

    /// The not-ready policy.
    pub fn policy(&self) -> NotReadyPolicy {
        self.policy
    }

    /// Renders the desired object from the ready and not-ready IPs. `live`, when given and
    /// holding ports, supplies the ports. The result is what epcheck creates when no object
    /// exists; for an update pass it to [`apply_to_live`].
    pub fn render(
        &self,
        ready: &[IpAddr],
        not_ready: &[IpAddr],
        live: Option<&Endpoints>,
    ) -> Endpoints {
        let ready: BTreeSet<IpAddr> = ready.iter().copied().collect();
        let not_ready: BTreeSet<IpAddr> = match self.policy {
            NotReadyPolicy::Keep => not_ready
                .iter()
                .copied()
                .filter(|ip| !ready.contains(ip))
                .collect(),
            NotReadyPolicy::Drop => BTreeSet::new(),
        };
        let mut out = self.base.clone();
        if !ready.is_empty() || !not_ready.is_empty() {
            let ports = live
                .map(merged_ports)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| self.ports.clone());
            out.subsets.push(EndpointSubset {
                addresses: ready.into_iter().map(EndpointAddress::from_ip).collect(),
                not_ready_addresses: not_ready
                    .into_iter()
                    .map(EndpointAddress::from_ip)
                    .collect(),
                ports,
                ..EndpointSubset::default()
            });
        }
        out
    }
}

/// The body of a `PUT` that brings `live` to `desired`: the live object with everything kept
/// (labels, annotations, `resourceVersion`, unknown fields) except `subsets`, which are
/// `desired`'s. An address that the live object already had, with details `desired` does not
/// set (`hostname`, `nodeName`, `targetRef`, unknown fields), keeps those details. The
/// managed-by label is added when absent; a skip-mirror label that epcheck set (`mode:
/// endpointslice`) is removed when `desired` has none, so the mirroring controller makes the
/// Service's slices again. `desired`'s `epcheck.io/instance` label, if any, is set.
pub fn apply_to_live(live: &Endpoints, desired: &Endpoints) -> Endpoints {
    let mut out = live.clone();
    if out.api_version.is_empty() {
        out.api_version = ENDPOINTS_API_VERSION.to_owned();
    }
    if out.kind.is_empty() {
        out.kind = ENDPOINTS_KIND.to_owned();
    }
    let known: BTreeMap<String, &EndpointAddress> = live
        .subsets
        .iter()
        .flat_map(|s| s.addresses.iter().chain(&s.not_ready_addresses))
        .map(|a| (normalize_ip(&a.ip), a))
        .collect();
    out.subsets = desired.subsets.clone();
    for subset in &mut out.subsets {
        for addr in subset
            .addresses
            .iter_mut()
            .chain(subset.not_ready_addresses.iter_mut())
        {
            let bare = addr.hostname.is_none()
                && addr.node_name.is_none()
                && addr.target_ref.is_none()
                && addr.extra.is_empty();
            if let (true, Some(old)) = (bare, known.get(&normalize_ip(&addr.ip))) {
                let ip = std::mem::take(&mut addr.ip);
                *addr = (*old).clone();
                addr.ip = ip;
            }
        }
    }
    if crate::diff::skip_mirror_stale(live, desired) {
        out.metadata.labels.remove(SKIP_MIRROR_LABEL);
    }
    ensure_managed_by_label(&mut out);
    if let Some(instance) = instance_of(&desired.metadata.labels) {
        out.metadata
            .labels
            .insert(INSTANCE_LABEL.to_owned(), instance.to_owned());
    }
    out
}

/// All ports of an object's subsets, deduplicated (first occurrence kept, protocol `TCP` when
/// absent counted equal to an explicit `TCP`).
pub fn merged_ports(endpoints: &Endpoints) -> Vec<EndpointPort> {
    dedup_ports(
        endpoints
            .subsets
            .iter()
            .flat_map(|s| s.ports.iter().cloned())
            .collect(),
    )
}

fn dedup_ports(ports: Vec<EndpointPort>) -> Vec<EndpointPort> {
    let mut seen = BTreeSet::new();
    ports
        .into_iter()
        .filter(|p| {
            seen.insert((
                p.name.clone(),
                p.port,
                p.protocol_or_default().to_owned(),
                p.app_protocol.clone(),
            ))
        })
        .collect()
}

/// Checks serving ports as the ApiServer would, so that a bad template fails at start-up and
/// not on the first write: each port in 1..=65535; protocol, when given, `TCP`, `UDP` or
/// `SCTP`; names, when given, DNS-1123 labels; with more than one port every port named and
/// names unique. An empty list is valid (headless).
pub fn validate_ports(ports: &[EndpointPort]) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if !(1..=65535).contains(&p.port) {
            return Err(format!(
                "ports[{i}].port is {}; it must be between 1 and 65535",
                p.port
            ));
        }
        if let Some(proto) = &p.protocol
            && !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(format!(
                "ports[{i}].protocol is {proto:?}; it must be TCP, UDP or SCTP"
            ));
        }
        match p.name.as_deref() {
            None | Some("") if ports.len() > 1 => {
                return Err(format!(
                    "ports[{i}] has no name; every port needs a name when there is more than one"
                ));
            }
            None | Some("") => {}
            Some(name) => {
                validate_namespace(name).map_err(|_| {
                    format!("ports[{i}].name {name:?} must be a lowercase RFC 1123 label of at most 63 characters (e.g. 'http')")
                })?;
                if !names.insert(name) {
                    return Err(format!(
                        "ports[{i}].name {name:?} is used twice; port names must be unique"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An IP in canonical text form when it parses, else as given (for comparing and keying).
pub(crate) fn normalize_ip(ip: &str) -> String {
    ip.parse::<IpAddr>()
        .map_or_else(|_| ip.to_owned(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn port(name: Option<&str>, port: i32) -> EndpointPort {
        EndpointPort {
            name: name.map(str::to_owned),
            port,
            ..EndpointPort::default()
        }
    }

    #[test]
    fn policy_parsing() {
        assert_eq!(
            "keep".parse::<NotReadyPolicy>().unwrap(),
            NotReadyPolicy::Keep
        );
        assert_eq!(
            "drop".parse::<NotReadyPolicy>().unwrap(),
            NotReadyPolicy::Drop
        );
        assert!(
            "Keep"
                .parse::<NotReadyPolicy>()
                .unwrap_err()
                .to_string()
                .contains("\"keep\" and \"drop\"")
        );
        assert_eq!(NotReadyPolicy::default().to_string(), "keep");
    }

    #[test]
    fn ports_validation() {
        assert!(validate_ports(&[]).is_ok());
        assert!(validate_ports(&[port(None, 80)]).is_ok());
        assert!(validate_ports(&[port(Some("a"), 80), port(Some("b"), 80)]).is_ok());
        assert!(
            validate_ports(&[port(None, 0)])
                .unwrap_err()
                .contains("between 1 and 65535")
        );
        assert!(validate_ports(&[port(None, 65536)]).is_err());
        assert!(
            validate_ports(&[port(Some("Http"), 80)])
                .unwrap_err()
                .contains("RFC 1123")
        );
        assert!(
            validate_ports(&[port(Some("a"), 80), port(Some("a"), 81)])
                .unwrap_err()
                .contains("twice")
        );
        let icmp = EndpointPort {
            protocol: Some("ICMP".into()),
            ..port(None, 1)
        };
        assert!(
            validate_ports(&[icmp])
                .unwrap_err()
                .contains("TCP, UDP or SCTP")
        );
    }

    #[test]
    fn managed_by_states() {
        let mut ep = Endpoints::new("a", "b");
        assert_eq!(managed_by(&ep), ManagedBy::Absent);
        ep.metadata
            .labels
            .insert(MANAGED_BY_LABEL.into(), "Helm".into());
        assert_eq!(managed_by(&ep), ManagedBy::Other("Helm".into()));
        ensure_managed_by_label(&mut ep);
        assert_eq!(ep.metadata.labels[MANAGED_BY_LABEL], "Helm");
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_ip("2001:DB8:0::1"), "2001:db8::1");
        assert_eq!(normalize_ip("not-an-ip"), "not-an-ip");
    }
}
