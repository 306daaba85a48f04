//! Comparing desired and live EndpointSlices by meaning, and the writes that bring one to the
//! other.
//!
//! Slices are matched by name. Two slices with the same name are equal when they have the same
//! `addressType`, the same endpoints (keyed by their first address in canonical form, with
//! the same addresses and `ready`/`serving`/`terminating`), the same ports (`TCP` for an
//! absent protocol) and when the live one carries epcheck's labels and the owner reference to
//! the Service (with the Service's current uid: a Service deleted and created again gets its
//! slices re-owned, before the garbage collector removes them). Order, server-set metadata
//! (`resourceVersion`, `generation`, `managedFields`, …), other labels, annotations and
//! endpoint details epcheck does not set (`hostname`, `nodeName`, `zone`, `targetRef`,
//! `hints`) are not compared.
//!
//! [`plan`] lists the writes in a safe order: creates, then updates, then deletes (see
//! [`reconcile_slices`](crate::client::reconcile_slices)).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::instance::{INSTANCE_LABEL, instance_of};
use crate::render::normalize_ip;
use crate::slices::change::{SliceChange, SliceWriteKind, SlicesDiff};
use crate::slices::render::{SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL};
use crate::slices::types::{EndpointSlice, SliceEndpoint};
use crate::types::OwnerReference;

/// One write of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceWrite {
    /// What it changes.
    pub change: SliceChange,
    /// The body to `POST` or `PUT`; for a delete, the live slice (its `uid` and
    /// `resourceVersion` are the delete's preconditions).
    pub object: EndpointSlice,
}

/// The writes that bring the live slices to the desired ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlicePlan {
    /// Creates, then updates, then deletes, each in the order of the slices.
    pub writes: Vec<SliceWrite>,
}

impl SlicePlan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// The changes, in write order.
    pub fn diff(&self) -> SlicesDiff {
        SlicesDiff {
            changes: self.writes.iter().map(|w| w.change.clone()).collect(),
        }
    }
}

/// Plans the writes from `live` (epcheck's slices of the Service, as listed) to `desired`
/// (as rendered). Live slices whose names are not desired are deleted.
pub fn plan(live: &[EndpointSlice], desired: &[EndpointSlice]) -> SlicePlan {
    let by_name: BTreeMap<&str, &EndpointSlice> = live.iter().map(|s| (s.name(), s)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(EndpointSlice::name).collect();
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    for want in desired {
        match by_name.get(want.name()) {
            None => {
                let mut change = compare(None, want);
                change.kind = SliceWriteKind::Create;
                creates.push(SliceWrite {
                    change,
                    object: want.clone(),
                });
            }
            Some(have) => {
                let change = compare(Some(have), want);
                if !change.is_empty() {
                    updates.push(SliceWrite {
                        change,
                        object: apply_slice_to_live(have, want),
                    });
                }
            }
        }
    }
    let mut surplus: Vec<&EndpointSlice> =
        live.iter().filter(|s| !wanted.contains(s.name())).collect();
    surplus.sort_by_key(|s| s.name());
    let deletes = surplus.into_iter().map(|s| {
        let mut change = SliceChange::new(s.name(), SliceWriteKind::Delete, &s.address_type);
        change.removed = sorted(meaning(s).into_keys());
        SliceWrite {
            change,
            object: s.clone(),
        }
    });
    let mut writes = creates;
    writes.extend(updates);
    writes.extend(deletes);
    SlicePlan { writes }
}

/// The body of a `PUT` that brings `live` to `desired`: the live slice (its
/// `resourceVersion`, other labels, annotations, owner references and unknown fields kept)
/// with epcheck's labels (the instance label too, when `desired` has one) and owner reference set and `endpoints` and `ports` replaced. An
/// endpoint the live slice already had keeps the details `desired` does not set (`hostname`,
/// `nodeName`, `zone`, `targetRef`, unknown fields).
pub fn apply_slice_to_live(live: &EndpointSlice, desired: &EndpointSlice) -> EndpointSlice {
    let mut out = live.clone().with_type_meta();
    for key in [SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL, INSTANCE_LABEL] {
        if let Some(v) = desired.metadata.labels.get(key) {
            out.metadata.labels.insert(key.to_owned(), v.clone());
        }
    }
    let refs = &mut out.metadata.owner_references;
    refs.retain(|r| {
        !desired
            .metadata
            .owner_references
            .iter()
            .any(|d| same_owner(r, d))
    });
    refs.extend(desired.metadata.owner_references.iter().cloned());
    let known: BTreeMap<String, &SliceEndpoint> = live
        .endpoints
        .iter()
        .map(|e| (endpoint_key(e), e))
        .collect();
    out.endpoints = desired
        .endpoints
        .iter()
        .map(|want| match known.get(&endpoint_key(want)) {
            Some(old) => SliceEndpoint {
                addresses: want.addresses.clone(),
                conditions: want.conditions.clone(),
                ..(*old).clone()
            },
            None => want.clone(),
        })
        .collect();
    out.ports.clone_from(&desired.ports);
    out
}

/// An endpoint as compared: its canonical addresses and conditions.
type EndpointMeaning = (Vec<String>, Option<bool>, Option<bool>, Option<bool>);

fn endpoint_key(e: &SliceEndpoint) -> String {
    e.addresses
        .first()
        .map(|a| normalize_ip(a))
        .unwrap_or_default()
}

fn meaning(slice: &EndpointSlice) -> BTreeMap<String, EndpointMeaning> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let addrs = e.addresses.iter().map(|a| normalize_ip(a)).collect();
            (endpoint_key(e), (addrs, c.ready, c.serving, c.terminating))
        })
        .collect()
}

fn port_keys(slice: &EndpointSlice) -> BTreeSet<(String, Option<i32>, String, Option<String>)> {
    slice
        .ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

fn same_owner(a: &OwnerReference, b: &OwnerReference) -> bool {
    a.api_version == b.api_version && a.kind == b.kind && a.name == b.name
}

/// Compares one desired slice with its live namesake (or with nothing).
fn compare(live: Option<&EndpointSlice>, want: &EndpointSlice) -> SliceChange {
    let mut change = SliceChange::new(want.name(), SliceWriteKind::Update, &want.address_type);
    let have = live.map(meaning).unwrap_or_default();
    let need = meaning(want);
    let ready = |m: &EndpointMeaning| m.1 != Some(false);
    let (mut added_ready, mut added_not_ready, mut now_ready, mut now_not_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (ip, m) in &need {
        match have.get(ip) {
            None if ready(m) => added_ready.push(ip.clone()),
            None => added_not_ready.push(ip.clone()),
            Some(old) if old == m => {}
            Some(_) if ready(m) => now_ready.push(ip.clone()),
            Some(_) => now_not_ready.push(ip.clone()),
        }
    }
    change.added_ready = sorted(added_ready);
    change.added_not_ready = sorted(added_not_ready);
    change.now_ready = sorted(now_ready);
    change.now_not_ready = sorted(now_not_ready);
    change.removed = sorted(have.keys().filter(|k| !need.contains_key(*k)).cloned());
    if let Some(live) = live {
        change.ports_changed =
            port_keys(live) != port_keys(want) || live.address_type != want.address_type;
        let labels_ok = [SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL]
            .iter()
            .all(|k| live.metadata.labels.get(*k) == want.metadata.labels.get(*k))
            // An instance label is compared only when epcheck sets one.
            && (instance_of(&want.metadata.labels).is_none()
                || instance_of(&live.metadata.labels) == instance_of(&want.metadata.labels));
        let owner_ok = want.metadata.owner_references.iter().all(|w| {
            live.metadata
                .owner_references
                .iter()
                .any(|r| same_owner(r, w) && r.uid == w.uid && r.controller == w.controller)
        });
        change.metadata_changed = !(labels_ok && owner_ok);
    }
    change
}

/// IPs in address order (IPv4 first), anything unparsable after them.
fn sorted(ips: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<(Option<IpAddr>, String)> = ips
        .into_iter()
        .map(|s| (s.parse::<IpAddr>().ok(), s))
        .collect();
    v.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    v.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::render::NotReadyPolicy;
    use crate::slices::render::SliceRenderer;
    use crate::types::EndpointPort;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn renderer() -> SliceRenderer {
        let port = EndpointPort {
            port: 80,
            ..EndpointPort::default()
        };
        SliceRenderer::new("default", "web", &[port], NotReadyPolicy::Keep).unwrap()
    }

    /// What the ApiServer returns: server fields set, order changed, protocol defaulted.
    fn as_stored(mut s: EndpointSlice) -> EndpointSlice {
        s.metadata.resource_version = Some("7".into());
        s.metadata.uid = Some("slice-uid".into());
        s.metadata.generation = Some(1);
        s.metadata.labels.insert("extra".into(), "kept".into());
        s.endpoints.reverse();
        for e in &mut s.endpoints {
            e.addresses = e
                .addresses
                .iter()
                .map(|a| a.replace("2001:db8::", "2001:DB8:0::"))
                .collect();
        }
        s
    }

    #[test]
    fn equal_by_meaning_plans_nothing() {
        let r = renderer();
        let desired = r.render(
            "u1",
            &ips(&["198.51.100.2", "2001:db8::1"]),
            &ips(&["198.51.100.1"]),
            &[],
        );
        let live: Vec<EndpointSlice> = desired.iter().cloned().map(as_stored).collect();
        let p = plan(
            &live,
            &r.render(
                "u1",
                &ips(&["198.51.100.2", "2001:db8::1"]),
                &ips(&["198.51.100.1"]),
                &live,
            ),
        );
        assert!(p.is_empty(), "{}", p.diff());
        assert_eq!(p.diff().to_string(), "no change");
    }

    #[test]
    fn changes_are_ordered_and_summarised() {
        let r = renderer();
        let all: Vec<IpAddr> = (1..=150)
            .map(|n| format!("198.51.100.{}", n % 250).parse().unwrap())
            .collect();
        let live: Vec<EndpointSlice> = r
            .render("u1", &all, &[], &[])
            .into_iter()
            .map(as_stored)
            .collect();
        // 198.51.100.1 fails; 20 targets go; the Service was re-created (new uid).
        let ready = &all[1..130];
        let desired = r.render("u2", ready, &all[..1], &live);
        let p = plan(&live, &desired);
        let kinds: Vec<SliceWriteKind> = p.writes.iter().map(|w| w.change.kind).collect();
        assert_eq!(kinds, [SliceWriteKind::Update, SliceWriteKind::Update]);
        let first = &p.writes[0];
        assert_eq!(first.change.now_not_ready, ["198.51.100.1"]);
        assert!(first.change.metadata_changed);
        assert_eq!(first.object.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(first.object.metadata.labels["extra"], "kept");
        assert_eq!(first.object.metadata.owner_references.len(), 1);
        assert_eq!(first.object.metadata.owner_references[0].uid, "u2");
        assert_eq!(
            first.change.to_string(),
            "update web-epcheck-ipv4-0 (IPv4): 198.51.100.1→not-ready labels/owner"
        );
        assert_eq!(
            p.writes[1].change.to_string(),
            "update web-epcheck-ipv4-1 (IPv4): -20 labels/owner"
        );
        // Shrinking to 10 targets: one update, then the delete.
        let desired = r.render("u1", &all[..10], &[], &live);
        let p = plan(&live, &desired);
        let d = p.diff();
        assert_eq!(
            (
                d.count(SliceWriteKind::Update),
                d.count(SliceWriteKind::Delete)
            ),
            (1, 1)
        );
        assert_eq!(d.changes[1].kind, SliceWriteKind::Delete);
        assert_eq!(d.changes[1].removed.len(), 50);
        assert!(
            d.to_string()
                .ends_with("; delete web-epcheck-ipv4-1 (IPv4)"),
            "{d}"
        );
    }

    #[test]
    fn creates_come_first_and_details_survive() {
        let r = renderer();
        let mut live = r.render("u1", &ips(&["198.51.100.1"]), &[], &[]);
        live[0].endpoints[0].hostname = Some("db-1".into());
        live[0].ports[0].protocol = None;
        let desired = r.render(
            "u1",
            &ips(&["198.51.100.1", "2001:db8::9"]),
            &ips(&["198.51.100.2"]),
            &live,
        );
        let p = plan(&live, &desired);
        let d = p.diff();
        assert_eq!(
            d.to_string(),
            "create web-epcheck-ipv6-0 (IPv6): +2001:db8::9; \
             update web-epcheck-ipv4-0 (IPv4): +198.51.100.2(not-ready)"
        );
        let body = &p.writes[1].object;
        assert_eq!(body.endpoints[0].hostname.as_deref(), Some("db-1"));
        assert_eq!(body.ports[0].protocol.as_deref(), Some("TCP"));
    }
}
