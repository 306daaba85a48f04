//! The desired EndpointSlices of one Service (SPEC §9, `mode: endpointslice`).
//!
//! A [`SliceRenderer`] is built once per service (from the same inputs as the Endpoints
//! [`Renderer`]) and checks everything that could be wrong then; [`SliceRenderer::render`] is
//! infallible. Each rendered slice has:
//!
//! * labels `kubernetes.io/service-name: <service>` and
//!   `endpointslice.kubernetes.io/managed-by: epcheck.io` — never the value of Kubernetes' own
//!   controllers, which would delete or overwrite slices they think are theirs;
//! * an owner reference to the Service (`v1`, `Service`, name, uid, `controller: true`), so
//!   that deleting the Service garbage-collects its slices (none when the uid is not known,
//!   as in `epcheck plan`, which reads no Service). `blockOwnerDeletion` is left unset:
//!   where the `OwnerReferencesPermissionEnforcement` admission plugin is on (OpenShift, for
//!   one), setting it needs `update` on `services/finalizers`, a grant epcheck's least-privilege
//!   Role does not have (SPEC §10), and it only matters to foreground deletion of the Service;
//! * one `addressType` (`IPv4` or `IPv6`; a Service with both kinds of targets gets slices of
//!   both) and at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints, sorted by address, each with
//!   `ready` = `serving` = healthy and `terminating: false`; failing targets are kept as not
//!   ready with [`NotReadyPolicy::Keep`] and left out with [`NotReadyPolicy::Drop`]. ApiServers
//!   before 1.22 drop `serving` and `terminating`
//!   ([`with_serving_terminating`](SliceRenderer::with_serving_terminating)`(false)`): the
//!   slices then carry `ready` only, what such a server keeps, so that the comparison with the
//!   live slices finds them equal and steady state writes nothing;
//! * the serving ports, protocol made explicit.
//!
//! # Names
//!
//! Slices get deterministic names, `<service>-epcheck-<ipv4|ipv6>-<n>` with the lowest free
//! `n`, instead of the endpointslice controller's `generateName`. A create that is retried
//! after a lost response then meets `409 AlreadyExists` instead of leaving a duplicate slice
//! behind, and a reconcile matches desired and live slices by name. Services are DNS-1035
//! labels (at most 63 characters), so the names always fit.
//!
//! # Placement
//!
//! Endpoints stay in the live slice that already holds them (as the endpointslice controller
//! does), so a target that appears, disappears or changes state rewrites one slice, not every
//! slice after it. New endpoints fill the live slices with room first (lowest index first), then
//! new slices. When the result uses more slices than `ceil(endpoints / 100)`, the smallest
//! slices are emptied into the fullest ones with room until it does not; emptied slices are
//! deleted. Endpoints therefore only ever move *out of* slices that are about to be deleted,
//! which is what lets [`reconcile_slices`](crate::client::reconcile_slices) write creates and
//! updates before deletes without any endpoint missing in between.
//!
//! When there is no endpoint at all, one empty slice is kept (the live one if any), like the
//! endpointslice controller's placeholder and like `subsets: []` for Endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::error::Error;
use crate::instance::INSTANCE_LABEL;
use crate::path::{check_namespace, validate_name};
use crate::render::{NotReadyPolicy, Renderer, validate_ports};
use crate::slices::placement::{Bin, place};
use crate::slices::types::{EndpointSlice, SliceEndpoint, SlicePort};
use crate::types::{EndpointPort, Extra, OwnerReference};

/// The label that names a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label that says which controller manages a slice.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// epcheck's value of [`SLICE_MANAGED_BY_LABEL`].
pub const SLICE_MANAGED_BY_VALUE: &str = "epcheck.io";

/// The endpointslice controller's value of [`SLICE_MANAGED_BY_LABEL`]; epcheck never writes it.
pub const CONTROLLER_MANAGED_BY_VALUE: &str = "endpointslice-controller.k8s.io";

/// The endpointslice-mirroring controller's value of [`SLICE_MANAGED_BY_LABEL`].
pub const MIRRORING_MANAGED_BY_VALUE: &str = "endpointslicemirroring-controller.k8s.io";

/// Most endpoints epcheck puts in one slice (the controller's `--max-endpoints-per-slice`
/// default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// The address family of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressFamily {
    /// `addressType: IPv4`.
    V4,
    /// `addressType: IPv6`.
    V6,
}

impl AddressFamily {
    /// Both families, IPv4 first.
    pub const ALL: [Self; 2] = [Self::V4, Self::V6];

    /// The family of an IP (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// `IPv4` or `IPv6`, the `addressType`.
    pub const fn address_type(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// The family of an `addressType`; `None` for `FQDN` and unknown values.
    pub fn from_address_type(address_type: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.address_type() == address_type)
    }

    /// `ipv4` or `ipv6`, as used in slice names.
    pub const fn name_part(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

/// The owner reference epcheck puts on a Service's slices; see the module docs.
pub fn service_owner_reference(service: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: service.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
        extra: Extra::new(),
    }
}

/// The label selector of a Service's slices that epcheck manages:
/// `kubernetes.io/service-name=<service>,endpointslice.kubernetes.io/managed-by=epcheck.io`.
pub fn epcheck_selector(service: &str) -> String {
    format!("{SERVICE_NAME_LABEL}={service},{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGED_BY_VALUE}")
}

/// The ready addresses of the mirroring controller's slices among `slices`: what it made of
/// the Service's Endpoints object.
pub fn mirrored_ready<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|s| {
            s.metadata
                .labels
                .get(SLICE_MANAGED_BY_LABEL)
                .map(String::as_str)
                == Some(MIRRORING_MANAGED_BY_VALUE)
        })
        .flat_map(EndpointSlice::ready_addresses)
        .collect()
}

/// Whether a slice carries both of epcheck's labels for `service`.
pub fn is_epcheck_slice(slice: &EndpointSlice, service: &str) -> bool {
    let labels = &slice.metadata.labels;
    labels.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        && labels.get(SLICE_MANAGED_BY_LABEL).map(String::as_str) == Some(SLICE_MANAGED_BY_VALUE)
}

/// Renders the desired EndpointSlices of one Service.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRenderer {
    namespace: String,
    service: String,
    ports: Vec<SlicePort>,
    policy: NotReadyPolicy,
    serving_terminating: bool,
    /// The `epcheck.io/instance` label value, if set.
    instance: Option<String>,
}

impl SliceRenderer {
    /// Prepares rendering for the Service `namespace/service` with these serving ports.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or Service name (or one too long to
    /// name slices after); [`Error::InvalidTemplate`] when the ports fail
    /// [`validate_ports`].
    pub fn new(
        namespace: &str,
        service: &str,
        ports: &[EndpointPort],
        policy: NotReadyPolicy,
    ) -> Result<Self, Error> {
        check_namespace(namespace)?;
        validate_name(service).map_err(|problem| Error::InvalidObjectName {
            what: "Service name",
            value: service.to_owned(),
            problem,
        })?;
        let longest = format!("{service}-epcheck-ipv6-{}", u32::MAX);
        validate_name(&longest).map_err(|_| Error::InvalidObjectName {
            what: "Service name",
            value: service.to_owned(),
            problem: "it is too long to name EndpointSlices after (<service>-epcheck-ipv6-<n> must stay a DNS-1123 subdomain of at most 253 characters)".to_owned(),
        })?;
        validate_ports(ports).map_err(|problem| Error::InvalidTemplate {
            object: format!("{namespace}/{service}"),
            problem: format!("EndpointSlice ports: {problem}"),
        })?;
        Ok(Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            ports: ports.iter().map(SlicePort::from).collect(),
            policy,
            serving_terminating: true,
            instance: None,
        })
    }

    /// Whether the endpoints carry `serving` and `terminating` (default `true`). Pass the
    /// server's [`VersionInfo::keeps_slice_serving_terminating`](crate::VersionInfo::keeps_slice_serving_terminating):
    /// servers before 1.22 drop both fields, and slices rendered with them would differ from
    /// the live ones on every comparison, a write at every resync.
    #[must_use]
    pub fn with_serving_terminating(mut self, keep: bool) -> Self {
        self.serving_terminating = keep;
        self
    }

    /// The same Service, ports, policy and instance as an Endpoints [`Renderer`] (its
    /// configured ports: the service's `ports`, else the template's).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_renderer(renderer: &Renderer) -> Result<Self, Error> {
        let slices = Self::new(
            renderer.namespace(),
            renderer.name(),
            renderer.ports(),
            renderer.policy(),
        )?;
        Ok(match renderer.instance() {
            Some(instance) => slices.with_instance(instance),
            None => slices,
        })
    }

    /// Labels every rendered slice `epcheck.io/instance: <instance>` ([`crate::instance`]).
    #[must_use]
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_owned());
        self
    }

    /// The instance set with [`with_instance`](Self::with_instance), if any.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The serving ports every slice carries.
    pub fn ports(&self) -> &[SlicePort] {
        &self.ports
    }

    /// The not-ready policy.
    pub fn policy(&self) -> NotReadyPolicy {
        self.policy
    }

    /// The label selector of this Service's epcheck slices ([`epcheck_selector`]).
    pub fn selector(&self) -> String {
        epcheck_selector(&self.service)
    }

    /// The name of slice `index` of a family: `<service>-epcheck-<ipv4|ipv6>-<index>`.
    pub fn slice_name(&self, family: AddressFamily, index: u32) -> String {
        format!("{}-epcheck-{}-{index}", self.service, family.name_part())
    }

    /// The desired slices, ordered by family then index, from the ready and not-ready IPs (an
    /// IP in both is ready), the Service's uid (for the owner reference; an empty uid, when no
    /// Service was read, leaves the owner reference out) and the live slices (for placement;
    /// slices without epcheck's labels for this Service are ignored). See the module docs.
    pub fn render(
        &self,
        service_uid: &str,
        ready: &[IpAddr],
        not_ready: &[IpAddr],
        live: &[EndpointSlice],
    ) -> Vec<EndpointSlice> {
        let mut wanted: BTreeMap<IpAddr, bool> = BTreeMap::new();
        if self.policy == NotReadyPolicy::Keep {
            wanted.extend(not_ready.iter().map(|ip| (ip.to_canonical(), false)));
        }
        wanted.extend(ready.iter().map(|ip| (ip.to_canonical(), true)));

        let mut live: Vec<&EndpointSlice> = live
            .iter()
            .filter(|s| is_epcheck_slice(s, &self.service))
            .collect();
        live.sort_by_key(|s| self.order_key(s));
        let mut used: BTreeSet<String> = live.iter().map(|s| s.name().to_owned()).collect();

        let mut bins = Vec::new();
        for family in AddressFamily::ALL {
            let eps: BTreeSet<IpAddr> = wanted
                .keys()
                .copied()
                .filter(|ip| AddressFamily::of(*ip) == family)
                .collect();
            let live_family: Vec<&EndpointSlice> = live
                .iter()
                .copied()
                .filter(|s| AddressFamily::from_address_type(&s.address_type) == Some(family))
                .collect();
            bins.extend(place(family, &eps, &live_family, || {
                self.fresh_name(family, &mut used)
            }));
        }
        if bins.is_empty() {
            // The placeholder: the first live slice of a known family, else a new IPv4 one.
            let reuse = live.iter().find_map(|s| {
                AddressFamily::from_address_type(&s.address_type).map(|f| (s.name(), f))
            });
            let (name, family) = match reuse {
                Some((name, family)) => (name.to_owned(), family),
                None => (
                    self.fresh_name(AddressFamily::V4, &mut used),
                    AddressFamily::V4,
                ),
            };
            bins.push(Bin::new(name, family));
        }
        let mut out: Vec<EndpointSlice> = bins
            .iter()
            .map(|bin| self.build(bin, &wanted, service_uid))
            .collect();
        out.sort_by_key(|s| self.order_key(s));
        out
    }

    fn fresh_name(&self, family: AddressFamily, used: &mut BTreeSet<String>) -> String {
        let mut index = 0u32;
        loop {
            let name = self.slice_name(family, index);
            if used.insert(name.clone()) {
                return name;
            }
            index = index.saturating_add(1);
        }
    }

    /// Orders slices by family, then by the index of epcheck's names, then by name.
    fn order_key(&self, slice: &EndpointSlice) -> (Option<AddressFamily>, u32, String) {
        let family = AddressFamily::from_address_type(&slice.address_type);
        let index = family
            .and_then(|f| {
                let prefix = format!("{}-epcheck-{}-", self.service, f.name_part());
                slice.name().strip_prefix(&prefix)?.parse::<u32>().ok()
            })
            .unwrap_or(u32::MAX);
        (family, index, slice.name().to_owned())
    }

    fn build(
        &self,
        bin: &Bin,
        wanted: &BTreeMap<IpAddr, bool>,
        service_uid: &str,
    ) -> EndpointSlice {
        let mut slice = EndpointSlice::new(&self.namespace, &bin.name, bin.family.address_type());
        let labels = &mut slice.metadata.labels;
        labels.insert(SERVICE_NAME_LABEL.to_owned(), self.service.clone());
        labels.insert(
            SLICE_MANAGED_BY_LABEL.to_owned(),
            SLICE_MANAGED_BY_VALUE.to_owned(),
        );
        if let Some(instance) = &self.instance {
            labels.insert(INSTANCE_LABEL.to_owned(), instance.clone());
        }
        if !service_uid.is_empty() {
            slice.metadata.owner_references =
                vec![service_owner_reference(&self.service, service_uid)];
        }
        slice.endpoints = bin
            .ips
            .iter()
            .map(|ip| {
                let mut ep = SliceEndpoint::from_ip(*ip, wanted.get(ip).copied().unwrap_or(false));
                if let (false, Some(c)) = (self.serving_terminating, ep.conditions.as_mut()) {
                    c.serving = None;
                    c.terminating = None;
                }
                ep
            })
            .collect();
        slice.ports.clone_from(&self.ports);
        slice
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xC633_6400 + n)) // 198.51.100.0 + n
    }

    fn renderer(policy: NotReadyPolicy) -> SliceRenderer {
        let port = EndpointPort {
            port: 6379,
            ..EndpointPort::default()
        };
        SliceRenderer::new("default", "redis", &[port], policy).unwrap()
    }

    fn counts(slices: &[EndpointSlice]) -> Vec<(String, usize)> {
        slices
            .iter()
            .map(|s| (s.name().to_owned(), s.endpoints.len()))
            .collect()
    }

    #[test]
    fn fresh_slices_are_chunks_of_100() {
        let r = renderer(NotReadyPolicy::Keep);
        let ready: Vec<IpAddr> = (1..=250).map(v4).collect();
        let out = r.render("uid-1", &ready, &[], &[]);
        assert_eq!(
            counts(&out),
            [
                ("redis-epcheck-ipv4-0".to_owned(), 100),
                ("redis-epcheck-ipv4-1".to_owned(), 100),
                ("redis-epcheck-ipv4-2".to_owned(), 50)
            ]
        );
        assert_eq!(out[0].endpoints[0].addresses, ["198.51.100.1"]);
        assert_eq!(out[0].metadata.owner_references[0].uid, "uid-1");
    }

    #[test]
    fn families_and_policy() {
        let ready = [v4(1), "2001:db8::1".parse().unwrap()];
        let failing = [v4(2), v4(1), "::ffff:198.51.100.3".parse().unwrap()];
        let out = renderer(NotReadyPolicy::Keep).render("u", &ready, &failing, &[]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].address_type, "IPv4");
        let v4s: Vec<(&str, Option<bool>)> = out[0]
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready,
                )
            })
            .collect();
        assert_eq!(
            v4s,
            [
                ("198.51.100.1", Some(true)),
                ("198.51.100.2", Some(false)),
                ("198.51.100.3", Some(false))
            ]
        );
        assert_eq!(out[1].address_type, "IPv6");
        assert_eq!(
            out[1].metadata.name.as_deref(),
            Some("redis-epcheck-ipv6-0")
        );
        let out = renderer(NotReadyPolicy::Drop).render("u", &ready, &failing, &[]);
        assert_eq!(out[0].endpoints.len(), 1);
    }

    #[test]
    fn old_servers_get_ready_only_and_plan_gets_no_owner() {
        let r = renderer(NotReadyPolicy::Keep).with_serving_terminating(false);
        let out = r.render("u", &[v4(1)], &[v4(2)], &[]);
        let conditions: Vec<_> = out[0]
            .endpoints
            .iter()
            .map(|e| e.conditions.clone().unwrap())
            .collect();
        assert_eq!(conditions[0].ready, Some(true));
        assert_eq!(conditions[1].ready, Some(false));
        assert!(
            conditions
                .iter()
                .all(|c| c.serving.is_none() && c.terminating.is_none())
        );
        assert_eq!(out[0].metadata.owner_references.len(), 1);
        // Without a Service (`epcheck plan`): no owner reference with an empty uid.
        let offline = renderer(NotReadyPolicy::Keep).render("", &[v4(1)], &[], &[]);
        assert!(offline[0].metadata.owner_references.is_empty());
        let c = offline[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!((c.serving, c.terminating), (Some(true), Some(false)));
    }

    #[test]
    fn names_and_checks() {
        let r = renderer(NotReadyPolicy::Keep);
        assert_eq!(r.slice_name(AddressFamily::V6, 3), "redis-epcheck-ipv6-3");
        assert_eq!(
            r.selector(),
            "kubernetes.io/service-name=redis,endpointslice.kubernetes.io/managed-by=epcheck.io"
        );
        let long = "a".repeat(240);
        assert!(SliceRenderer::new("default", &long, &[], NotReadyPolicy::Keep).is_err());
        let bad = EndpointPort {
            port: 0,
            ..EndpointPort::default()
        };
        let err = SliceRenderer::new("default", "x", &[bad], NotReadyPolicy::Keep).unwrap_err();
        assert!(err.to_string().contains("EndpointSlice ports"), "{err}");
        assert_eq!(AddressFamily::from_address_type("FQDN"), None);
    }
}
