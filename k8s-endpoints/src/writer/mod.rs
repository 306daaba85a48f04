//! What a service's healthy set is written to: its v1 Endpoints object ([`Mode::Endpoints`],
//! the original behaviour) or discovery.k8s.io/v1 EndpointSlices ([`Mode::EndpointSlice`]),
//! and how a Service changes hands between the two (this module for Endpoints → slices,
//! `handover.rs` for slices → Endpoints). [`ObjectWriter`] is the unit a daemon calls per
//! service; [`ServerPolicy`] is what the cluster's version allows.

mod handover;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::client::{ReconcileMode, RetryDecision, classify, reconcile, reconcile_slices};
use crate::slices::SliceRenderer;
use crate::{
    Client, ManagedBy, NotReadyPolicy, ReconcileAction, Renderer, ServiceInfo, apply_to_live,
    check_instance, diff, managed_by, mark_skip_mirror,
};

use handover::HandOver;

/// What a Service's healthy set is written to (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// v1 Endpoints objects (the original behaviour).
    #[default]
    Endpoints,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlice,
}

/// What the cluster's version allows, read once from `/version`. An unknown version (the
/// request failed) allows everything: the configured behaviour is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// `notReadyAddresses` may be written (SPEC §5.4): before 1.22 kube-proxy mirrored them
    /// into EndpointSlices as ready (kubernetes#102683), so `not_ready: keep` falls back to
    /// `drop` there, with a warning.
    pub not_ready_addresses: bool,
    /// The server keeps EndpointSlice `serving` and `terminating` (SPEC §9): before 1.22 it
    /// drops them, so slices carry `ready` only and compare equal to what is stored.
    pub slice_serving_terminating: bool,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            not_ready_addresses: true,
            slice_serving_terminating: true,
        }
    }
}

impl ServerPolicy {
    /// The policy to use for a service's `not_ready`.
    pub fn not_ready(self, configured: NotReadyPolicy) -> NotReadyPolicy {
        if self.not_ready_addresses {
            configured
        } else {
            NotReadyPolicy::Drop
        }
    }

    /// Reads the ApiServer's version once and says what it allows.
    pub async fn read(client: &Client) -> ServerPolicy {
        match client.server_version().await {
            Ok(v) => {
                let policy = ServerPolicy {
                    not_ready_addresses: v.not_ready_addresses_safe() != Some(false),
                    slice_serving_terminating: v.keeps_slice_serving_terminating() != Some(false),
                };
                if !policy.not_ready_addresses {
                    tracing::warn!(
                        version = %v,
                        "ApiServer older than 1.22: failing targets are dropped instead of being \
                         written as notReadyAddresses (kubernetes#102683)"
                    );
                }
                policy
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read the ApiServer version; keeping not_ready as configured");
                ServerPolicy::default()
            }
        }
    }
}

/// The outcome of one reconcile, whatever was written.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// What was done.
    pub action: ReconcileAction,
    /// A one-line summary of the change.
    pub change: String,
    /// The written object's `resourceVersion` (Endpoints mode).
    pub resource_version: Option<String>,
    /// 409s met and retried.
    pub conflicts: u32,
    /// Configured ports that match no port of the Service, when it was read.
    pub unmatched_ports: Option<UnmatchedPorts>,
}

/// Configured serving ports (the template's, or the service's `ports`) whose names match no
/// port of the Service: kube-proxy sends a Service port's traffic to the endpoint port of the
/// same name, so these route nothing (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedPorts {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The unmatched port names (`""` for an unnamed port).
    pub ports: Vec<String>,
    /// The Service's port names, as [`ServiceInfo::port_names`] shows them.
    pub service_ports: String,
}

impl UnmatchedPorts {
    /// The ports of `configured` that `service` has no port for, if any.
    pub fn check(service: &ServiceInfo, configured: &[crate::EndpointPort]) -> Option<Self> {
        let ports = service.unmatched_ports(configured);
        (!ports.is_empty()).then(|| UnmatchedPorts {
            service: format!("{}/{}", service.namespace, service.name),
            ports,
            service_ports: service.port_names(),
        })
    }
}

impl fmt::Display for UnmatchedPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .ports
            .iter()
            .map(|p| {
                if p.is_empty() {
                    "(unnamed)".to_owned()
                } else {
                    format!("{p:?}")
                }
            })
            .collect();
        write!(
            f,
            "endpoint port {} matches no port of Service {} (its ports: {}): kube-proxy routes \
             nothing to it; name the ports in endpoint_template (or the service's ports) like \
             the Service's",
            names.join(", "),
            self.service,
            self.service_ports
        )
    }
}

/// Renders and writes one service's objects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObjectWriter {
    renderer: Renderer,
    slices: Option<SliceRenderer>,
    /// In slice mode, whether an Endpoints object that epcheck wrote earlier (`mode:
    /// endpoints`) exists: [`LEGACY_UNKNOWN`] until the first write, then
    /// [`LEGACY_PRESENT`] (kept current) or [`LEGACY_ABSENT`] (never looked at again).
    legacy: Arc<AtomicU8>,
    /// In Endpoints mode, what is left of slice mode for this Service.
    handover: Option<HandOver>,
}

const LEGACY_UNKNOWN: u8 = 0;
const LEGACY_PRESENT: u8 = 1;
const LEGACY_ABSENT: u8 = 2;

impl ObjectWriter {
    /// A writer for `mode` from the service's Endpoints renderer, for a server that allows
    /// what `server` says.
    ///
    /// # Errors
    /// When the EndpointSlice renderer rejects the ports or names.
    pub fn new(renderer: Renderer, mode: Mode, server: ServerPolicy) -> Result<Self, crate::Error> {
        let slice_renderer = || {
            SliceRenderer::from_renderer(&renderer)
                .map(|r| r.with_serving_terminating(server.slice_serving_terminating))
        };
        let (slices, handover) = match mode {
            Mode::EndpointSlice => (Some(slice_renderer()?), None),
            // A Service that cannot have slices never had epcheck's: nothing to keep current.
            Mode::Endpoints => (
                None,
                Some(HandOver::new(
                    renderer.namespace(),
                    renderer.name(),
                    renderer.instance(),
                    slice_renderer().ok(),
                )),
            ),
        };
        Ok(ObjectWriter {
            renderer,
            slices,
            legacy: Arc::new(AtomicU8::new(LEGACY_UNKNOWN)),
            handover,
        })
    }

    /// Namespace of the objects.
    pub fn namespace(&self) -> &str {
        self.renderer.namespace()
    }

    /// Name of the Service (and of its Endpoints object).
    pub fn name(&self) -> &str {
        self.renderer.name()
    }

    /// Brings the objects to `ready`/`not_ready`; see [`reconcile`] and [`reconcile_slices`].
    ///
    /// # Errors
    /// As those functions.
    pub async fn reconcile(
        &self,
        client: &Client,
        ready: &[IpAddr],
        not_ready: &[IpAddr],
        mode: ReconcileMode,
    ) -> Result<WriteOutcome, crate::Error> {
        match &self.slices {
            None => {
                // Slices → Endpoints: epcheck's slices first made current, then the Endpoints
                // object written (without skip-mirror), then the slices deleted once the
                // mirror shows the healthy set (see `handover`).
                let handover = self
                    .handover
                    .as_ref()
                    .filter(|h| mode == ReconcileMode::Apply && h.is_due());
                let prepared = match handover {
                    Some(h) => h.prepare(client, ready, not_ready).await,
                    None => Ok(false),
                };
                match prepared {
                    Err(e @ crate::Error::OtherInstance { .. }) => return Err(e),
                    // The ApiServer is unavailable: the Endpoints write would fail too, and a
                    // daemon testing an outage wants one request per test, not two.
                    Err(crate::Error::SliceHandOver { source, .. })
                        if matches!(classify(&source), RetryDecision::Backoff { .. }) =>
                    {
                        return Err(*source);
                    }
                    _ => {}
                }
                let o = reconcile(client, &self.renderer, ready, not_ready, mode).await?;
                if let Some(h) = handover
                    && prepared?
                {
                    h.finish(client, ready).await?;
                }
                Ok(WriteOutcome {
                    action: o.action,
                    change: o.diff.to_string(),
                    resource_version: o.object.metadata.resource_version,
                    conflicts: o.conflicts,
                    unmatched_ports: o
                        .service
                        .as_ref()
                        .and_then(|svc| UnmatchedPorts::check(svc, self.renderer.ports())),
                })
            }
            Some(slices) => {
                let o = reconcile_slices(client, slices, ready, not_ready, mode).await?;
                if mode == ReconcileMode::Apply
                    && self.legacy.load(Ordering::Relaxed) != LEGACY_ABSENT
                {
                    self.keep_legacy_endpoints(client, ready, not_ready).await?;
                }
                Ok(WriteOutcome {
                    action: o.action,
                    change: o.diff.to_string(),
                    resource_version: None,
                    conflicts: o.conflicts,
                    unmatched_ports: UnmatchedPorts::check(&o.service, self.renderer.ports()),
                })
            }
        }
    }

    /// The addresses the live objects show ready now: the Endpoints object's `addresses`, or
    /// in slice mode the endpoints of epcheck's slices not marked unready; `None` when nothing
    /// exists yet. Consensus uses it to hold a target as written when this replica has not
    /// written the service itself.
    ///
    /// # Errors
    /// As [`Client::get_endpoints`] and [`Client::list_endpoint_slices`].
    pub async fn live_ready(
        &self,
        client: &Client,
    ) -> Result<Option<std::collections::BTreeSet<IpAddr>>, crate::Error> {
        let texts: Vec<String> = match &self.slices {
            None => match client.get_endpoints(self.namespace(), self.name()).await? {
                Some(live) => live
                    .subsets
                    .into_iter()
                    .flat_map(|s| s.addresses.into_iter().map(|a| a.ip))
                    .collect(),
                None => return Ok(None),
            },
            Some(_) => {
                let slices = client
                    .list_endpoint_slices(self.namespace(), self.name())
                    .await?;
                if slices.is_empty() {
                    return Ok(None);
                }
                slices
                    .into_iter()
                    .flat_map(|s| s.endpoints)
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                    .flat_map(|e| e.addresses)
                    .collect()
            }
        };
        Ok(Some(texts.iter().filter_map(|t| t.parse().ok()).collect()))
    }

    /// In EndpointSlice mode, an Endpoints object that epcheck wrote before (`mode: endpoints`)
    /// would be mirrored into the controller's own slices — stale backends kept in service —
    /// and read stale by whatever still reads v1 Endpoints. It is labelled
    /// `endpointslice.kubernetes.io/skip-mirror: "true"` and kept equal to the healthy set,
    /// after the slices are written (SPEC §9). An object that is absent or not epcheck's is
    /// left alone from then on; another instance's is an error (`Error::OtherInstance`).
    async fn keep_legacy_endpoints(
        &self,
        client: &Client,
        ready: &[IpAddr],
        not_ready: &[IpAddr],
    ) -> Result<(), crate::Error> {
        let live = match client.get_endpoints(self.namespace(), self.name()).await? {
            Some(live) if managed_by(&live) == ManagedBy::Epcheck => {
                // Another instance's Endpoints object would be mirrored beside these slices.
                check_instance(
                    "Endpoints",
                    || live.key(),
                    &live.metadata.labels,
                    self.renderer.instance(),
                )?;
                live
            }
            _ => {
                self.legacy.store(LEGACY_ABSENT, Ordering::Relaxed);
                return Ok(());
            }
        };
        self.legacy.store(LEGACY_PRESENT, Ordering::Relaxed);
        let mut desired = self.renderer.render(ready, not_ready, Some(&live));
        // The label is wanted here: compare and write with it.
        mark_skip_mirror(&mut desired);
        let changes = diff(&live, &desired);
        let mut body = apply_to_live(&live, &desired);
        let labelled = mark_skip_mirror(&mut body);
        if changes.is_empty() && !labelled {
            return Ok(());
        }
        match client
            .replace_endpoints(self.namespace(), self.name(), &body)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    object = %format!("{}/{}", self.namespace(), self.name()),
                    changes = %changes,
                    "kept the Endpoints object left from mode: endpoints current (skip-mirror)"
                );
                Ok(())
            }
            // Someone wrote it meanwhile: the next reconcile (a resync at the latest) retries.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) if e.is_not_found() => {
                self.legacy.store(LEGACY_ABSENT, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
