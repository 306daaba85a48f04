//! Comparing Endpoints by meaning (SPEC §5.3).
//!
//! The ApiServer may re-order addresses and repack subsets, so two objects are compared as
//! sets: the ready IPs, the not-ready IPs and the ports (name, number, protocol with `TCP` for
//! an absent one, and `appProtocol`), whatever subset each sits in. IPs are compared in
//! canonical form (`2001:DB8::1` equals `2001:db8::1`). Address details (`hostname`,
//! `nodeName`, `targetRef`) are not compared: epcheck does not own them.
//!
//! A live object without the `app.kubernetes.io/managed-by` label also counts as a change, so
//! that an object epcheck takes over is labelled by one write. Only a *missing* label counts:
//! another manager's value is left alone by [`crate::apply_to_live`], and counting it would
//! make a write on every pass that never converges.
//!
//! So does an `endpointslice.kubernetes.io/skip-mirror: "true"` label on an object epcheck
//! manages when the desired object has none: it is what `mode: endpointslice` leaves behind,
//! and in Endpoints mode it would keep the mirroring controller from making the slices
//! kube-proxy reads (SPEC §9). [`crate::apply_to_live`] removes it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::instance::{INSTANCE_LABEL, instance_of};
use crate::render::{MANAGED_BY_LABEL, ManagedBy, SKIP_MIRROR_LABEL, managed_by, normalize_ip};
use crate::types::{EndpointAddress, EndpointPort, Endpoints};

/// A port as compared: name (empty when absent), number, protocol (`TCP` when absent) and
/// application protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// Port name, empty when absent.
    pub name: String,
    /// Port number.
    pub port: i32,
    /// Protocol, `TCP` when absent.
    pub protocol: String,
    /// Application protocol.
    pub app_protocol: Option<String>,
}

impl From<&EndpointPort> for PortKey {
    fn from(p: &EndpointPort) -> Self {
        Self {
            name: p.name.clone().unwrap_or_default(),
            port: p.port,
            protocol: p.protocol_or_default().to_owned(),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

impl fmt::Display for PortKey {
    /// `http:8080/TCP`, `8080/UDP`, `web:443/TCP(https)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.name.is_empty() {
            write!(f, "{}:", self.name)?;
        }
        write!(f, "{}/{}", self.port, self.protocol)?;
        if let Some(app) = &self.app_protocol {
            write!(f, "({app})")?;
        }
        Ok(())
    }
}

/// What changes from the live object to the desired one. Lists are sorted (IPs in address
/// order, IPv4 first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointsDiff {
    /// IPs that become ready.
    pub added_ready: Vec<String>,
    /// IPs that are no longer ready.
    pub removed_ready: Vec<String>,
    /// IPs that become listed as not ready.
    pub added_not_ready: Vec<String>,
    /// IPs no longer listed as not ready.
    pub removed_not_ready: Vec<String>,
    /// Ports only the desired object has.
    pub added_ports: Vec<PortKey>,
    /// Ports only the live object has.
    pub removed_ports: Vec<PortKey>,
    /// The live object has no `app.kubernetes.io/managed-by` label.
    pub managed_by_label_missing: bool,
    /// The live object, which epcheck manages, is labelled
    /// `endpointslice.kubernetes.io/skip-mirror: "true"` and the desired one is not: the label
    /// left by `mode: endpointslice`, to be removed.
    pub skip_mirror_label_stale: bool,
    /// The desired object names an epcheck instance (`epcheck.io/instance`) that the live one
    /// does not: an object from before instances, adopted by the one that manages it.
    pub instance_label_missing: bool,
}

impl EndpointsDiff {
    /// Whether nothing changes, so that no write is needed.
    pub fn is_empty(&self) -> bool {
        !self.addresses_changed()
            && !self.ports_changed()
            && !self.managed_by_label_missing
            && !self.skip_mirror_label_stale
            && !self.instance_label_missing
    }

    /// Whether any ready or not-ready IP changes.
    pub fn addresses_changed(&self) -> bool {
        !(self.added_ready.is_empty()
            && self.removed_ready.is_empty()
            && self.added_not_ready.is_empty()
            && self.removed_not_ready.is_empty())
    }

    /// Whether the set of ports changes.
    pub fn ports_changed(&self) -> bool {
        !(self.added_ports.is_empty() && self.removed_ports.is_empty())
    }
}

impl fmt::Display for EndpointsDiff {
    /// `+198.51.100.10 -198.51.100.11 +198.51.100.12(not ready) ports +http:8081/TCP
    /// -http:8080/TCP label app.kubernetes.io/managed-by missing`, or `no change`. Addresses
    /// and port names of the live object came from the ApiServer, so control characters are
    /// escaped ([`escape_control`](crate::escape_control)).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.added_ready.iter().map(|ip| format!("+{ip}")));
        parts.extend(self.removed_ready.iter().map(|ip| format!("-{ip}")));
        parts.extend(
            self.added_not_ready
                .iter()
                .map(|ip| format!("+{ip}(not ready)")),
        );
        parts.extend(
            self.removed_not_ready
                .iter()
                .map(|ip| format!("-{ip}(not ready)")),
        );
        if self.ports_changed() {
            parts.push("ports".to_owned());
            parts.extend(self.added_ports.iter().map(|p| format!("+{p}")));
            parts.extend(self.removed_ports.iter().map(|p| format!("-{p}")));
        }
        if self.managed_by_label_missing {
            parts.push(format!("label {MANAGED_BY_LABEL} missing"));
        }
        if self.skip_mirror_label_stale {
            parts.push(format!("label {SKIP_MIRROR_LABEL} removed"));
        }
        if self.instance_label_missing {
            parts.push(format!("label {INSTANCE_LABEL} missing"));
        }
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&crate::escape_control(&parts.join(" ")))
        }
    }
}

/// Compares `live` with `desired` by meaning; see the module docs.
pub fn diff(live: &Endpoints, desired: &Endpoints) -> EndpointsDiff {
    let (live_ready, live_not_ready, live_ports) = meaning(live);
    let (want_ready, want_not_ready, want_ports) = meaning(desired);
    EndpointsDiff {
        added_ready: minus(&want_ready, &live_ready),
        removed_ready: minus(&live_ready, &want_ready),
        added_not_ready: minus(&want_not_ready, &live_not_ready),
        removed_not_ready: minus(&live_not_ready, &want_not_ready),
        added_ports: want_ports.difference(&live_ports).cloned().collect(),
        removed_ports: live_ports.difference(&want_ports).cloned().collect(),
        managed_by_label_missing: managed_by(live) == ManagedBy::Absent,
        skip_mirror_label_stale: skip_mirror_stale(live, desired),
        instance_label_missing: instance_of(&desired.metadata.labels).is_some()
            && instance_of(&live.metadata.labels) != instance_of(&desired.metadata.labels),
    }
}

/// Whether `live` carries a skip-mirror label that epcheck set and `desired` does not want.
pub(crate) fn skip_mirror_stale(live: &Endpoints, desired: &Endpoints) -> bool {
    managed_by(live) == ManagedBy::Epcheck
        && live
            .metadata
            .labels
            .get(SKIP_MIRROR_LABEL)
            .map(String::as_str)
            == Some("true")
        && !desired.metadata.labels.contains_key(SKIP_MIRROR_LABEL)
}

/// An IP as compared and sorted: parsed when it parses (address order), else its text after
/// every parsed IP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum IpKey {
    Ip(IpAddr),
    Text(String),
}

impl IpKey {
    fn of(address: &EndpointAddress) -> Self {
        address
            .ip
            .parse()
            .map_or_else(|_| Self::Text(normalize_ip(&address.ip)), Self::Ip)
    }

    fn into_text(self) -> String {
        match self {
            Self::Ip(ip) => ip.to_string(),
            Self::Text(text) => text,
        }
    }
}

type Meaning = (BTreeSet<IpKey>, BTreeSet<IpKey>, BTreeSet<PortKey>);

fn meaning(endpoints: &Endpoints) -> Meaning {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for subset in &endpoints.subsets {
        ready.extend(subset.addresses.iter().map(IpKey::of));
        not_ready.extend(subset.not_ready_addresses.iter().map(IpKey::of));
        ports.extend(subset.ports.iter().map(PortKey::from));
    }
    (ready, not_ready, ports)
}

fn minus(a: &BTreeSet<IpKey>, b: &BTreeSet<IpKey>) -> Vec<String> {
    a.difference(b).cloned().map(IpKey::into_text).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::render::MANAGED_BY_VALUE;
    use crate::types::EndpointSubset;

    fn addrs(ips: &[&str]) -> Vec<EndpointAddress> {
        ips.iter()
            .map(|ip| EndpointAddress {
                ip: (*ip).to_owned(),
                ..EndpointAddress::default()
            })
            .collect()
    }

    fn port(name: &str, port: i32, protocol: Option<&str>) -> EndpointPort {
        EndpointPort {
            name: Some(name.to_owned()),
            port,
            protocol: protocol.map(str::to_owned),
            ..EndpointPort::default()
        }
    }

    fn labelled(subsets: Vec<EndpointSubset>) -> Endpoints {
        let mut ep = Endpoints::new("default", "svc");
        ep.metadata
            .labels
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        ep.subsets = subsets;
        ep
    }

    fn subset(ready: &[&str], not_ready: &[&str], ports: Vec<EndpointPort>) -> EndpointSubset {
        EndpointSubset {
            addresses: addrs(ready),
            not_ready_addresses: addrs(not_ready),
            ports,
            ..EndpointSubset::default()
        }
    }

    #[test]
    fn repacked_subsets_are_equal() {
        let a = labelled(vec![subset(
            &["198.51.100.2", "198.51.100.1"],
            &["198.51.100.3"],
            vec![port("http", 80, None), port("dns", 53, Some("UDP"))],
        )]);
        let b = labelled(vec![
            subset(&["198.51.100.1"], &[], vec![port("dns", 53, Some("UDP"))]),
            subset(
                &["198.51.100.2"],
                &["198.51.100.3"],
                vec![port("http", 80, Some("TCP"))],
            ),
        ]);
        let d = diff(&a, &b);
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.to_string(), "no change");
    }

    #[test]
    fn ipv6_is_compared_canonically() {
        let a = labelled(vec![subset(&["2001:DB8:0:0::1"], &[], vec![])]);
        let b = labelled(vec![subset(&["2001:db8::1"], &[], vec![])]);
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn changes_are_reported_concisely() {
        let live = labelled(vec![subset(
            &["198.51.100.11", "198.51.100.12"],
            &[],
            vec![port("http", 8080, None)],
        )]);
        let desired = labelled(vec![subset(
            &["198.51.100.10"],
            &["198.51.100.12"],
            vec![port("http", 8081, None)],
        )]);
        let d = diff(&live, &desired);
        assert!(d.addresses_changed() && d.ports_changed() && !d.is_empty());
        assert_eq!(
            d.to_string(),
            "+198.51.100.10 -198.51.100.11 -198.51.100.12 +198.51.100.12(not ready) \
             ports +http:8081/TCP -http:8080/TCP"
        );
    }

    #[test]
    fn ip_order_is_numeric() {
        let live = labelled(vec![]);
        let desired = labelled(vec![subset(
            &["::1", "198.51.100.100", "198.51.100.9", "bogus"],
            &[],
            vec![],
        )]);
        assert_eq!(
            diff(&live, &desired).added_ready,
            ["198.51.100.9", "198.51.100.100", "::1", "bogus"]
        );
    }

    #[test]
    fn missing_label_alone_is_a_change() {
        let mut live = labelled(vec![]);
        let desired = labelled(vec![]);
        live.metadata.labels.clear();
        let d = diff(&live, &desired);
        assert!(!d.is_empty());
        assert!(!d.addresses_changed());
        assert_eq!(d.to_string(), "label app.kubernetes.io/managed-by missing");
        live.metadata
            .labels
            .insert(MANAGED_BY_LABEL.into(), "Helm".into());
        assert!(diff(&live, &desired).is_empty());
    }

    #[test]
    fn a_skip_mirror_label_epcheck_set_is_a_change_and_is_removed() {
        let mut live = labelled(vec![]);
        live.metadata
            .labels
            .insert(SKIP_MIRROR_LABEL.into(), "true".into());
        let desired = labelled(vec![]);
        let d = diff(&live, &desired);
        assert!(d.skip_mirror_label_stale && !d.is_empty());
        assert_eq!(
            d.to_string(),
            "label endpointslice.kubernetes.io/skip-mirror removed"
        );
        let body = crate::render::apply_to_live(&live, &desired);
        assert!(!body.metadata.labels.contains_key(SKIP_MIRROR_LABEL));
        assert!(diff(&body, &desired).is_empty());

        // Wanted (slice mode, or the template sets it): kept.
        let mut wanted = desired.clone();
        crate::render::mark_skip_mirror(&mut wanted);
        assert!(diff(&live, &wanted).is_empty());
        let body = crate::render::apply_to_live(&live, &wanted);
        assert_eq!(body.metadata.labels[SKIP_MIRROR_LABEL], "true");

        // Another manager's object: not epcheck's label to remove.
        live.metadata
            .labels
            .insert(MANAGED_BY_LABEL.into(), "Helm".into());
        assert!(diff(&live, &desired).is_empty());
        let body = crate::render::apply_to_live(&live, &desired);
        assert_eq!(body.metadata.labels[SKIP_MIRROR_LABEL], "true");
    }

    #[test]
    fn port_key_display() {
        let mut p = port("web", 443, None);
        p.app_protocol = Some("https".into());
        assert_eq!(PortKey::from(&p).to_string(), "web:443/TCP(https)");
        let p = EndpointPort {
            port: 53,
            protocol: Some("UDP".into()),
            ..EndpointPort::default()
        };
        assert_eq!(PortKey::from(&p).to_string(), "53/UDP");
    }
}
