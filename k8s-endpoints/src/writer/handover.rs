//! Handing a Service back from `mode: endpointslice` to `mode: endpoints` (SPEC §9).
//!
//! In slice mode epcheck writes the Service's EndpointSlices itself and labels the Endpoints
//! object it keeps `endpointslice.kubernetes.io/skip-mirror: "true"`. Back in Endpoints mode
//! the mirroring controller must make the slices again from the Endpoints object, and
//! epcheck's slices must go, without kube-proxy (which reads slices) ever seeing the Service
//! without its ready backends or a down backend as ready. While epcheck's slices exist, each
//! reconcile goes:
//!
//! 1. [`HandOver::prepare`]: list the Service's slices (`kubernetes.io/service-name=<svc>`).
//!    None of epcheck's: nothing to hand over, and nothing is listed again. Otherwise bring
//!    epcheck's slices to the current health, so what kube-proxy reads is right while both
//!    kinds of slices exist.
//! 2. The caller writes the Endpoints object with the current health and without the
//!    skip-mirror label ([`apply_to_live`](crate::apply_to_live) drops it); the
//!    mirroring controller then makes its slices from it.
//! 3. [`HandOver::finish`]: list again and delete epcheck's slices once the mirroring
//!    controller's slices show exactly the ready backends: deleting then loses no ready
//!    backend and shows no down one as ready. Until then epcheck's slices stay, current, and
//!    this step is tried again at the next reconcile (a resync at the latest). With no ready
//!    backend there is nothing to lose, so they go at once.
//!
//! Cost: one list per Service at start-up when there is nothing to hand over, nothing after.
//! A `403` (a Role made for Endpoints mode by an older `epcheck manifests`) is logged once,
//! with the Role the hand-over needs, and the Endpoints write goes on; a `404` (a server
//! without `discovery.k8s.io/v1`) means there is nothing to hand over.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::client::{ApiErrorKind, ReconcileMode, reconcile_slices};
use crate::slices::{EndpointSlice, SliceRenderer, is_epcheck_slice, mirrored_ready};
use crate::{Client, Error, check_instance};

/// Not listed yet.
const UNKNOWN: u8 = 0;
/// epcheck's slices were found: keep them current until the mirror shows the healthy set.
const PENDING: u8 = 1;
/// Nothing (more) to hand over, or not allowed to look: never listed again.
const DONE: u8 = 2;

/// The hand-over state of one Service in Endpoints mode. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub(super) struct HandOver {
    namespace: String,
    service: String,
    /// Renders epcheck's slices for step 1; `None` when the Service's names or ports cannot be
    /// slices, in which case epcheck never wrote any.
    slices: Option<SliceRenderer>,
    /// This deployment's instance: another instance's slices are never handed over.
    instance: Option<String>,
    state: Arc<AtomicU8>,
    warned_forbidden: Arc<AtomicBool>,
}

impl HandOver {
    pub(super) fn new(
        namespace: &str,
        service: &str,
        instance: Option<&str>,
        slices: Option<SliceRenderer>,
    ) -> Self {
        HandOver {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            slices,
            instance: instance.map(str::to_owned),
            state: Arc::new(AtomicU8::new(UNKNOWN)),
            warned_forbidden: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the Service still has to be looked at.
    pub(super) fn is_due(&self) -> bool {
        self.state.load(Ordering::Relaxed) != DONE
    }

    /// Step 1, before the Endpoints write: whether epcheck's slices exist (then they were
    /// brought to `ready`/`not_ready` as far as allowed, and [`finish`](Self::finish) must
    /// follow the write).
    ///
    /// # Errors
    /// [`Error::OtherInstance`] when another epcheck instance has slices for the Service: the
    /// caller writes nothing. [`Error::SliceHandOver`] when the list fails (but for `403` and
    /// `404`); the caller writes the Endpoints object anyway and reports it afterwards.
    pub(super) async fn prepare(
        &self,
        client: &Client,
        ready: &[IpAddr],
        not_ready: &[IpAddr],
    ) -> Result<bool, Error> {
        let listed = match self
            .list(client, "listing the Service's EndpointSlices")
            .await?
        {
            Some(listed) => listed,
            None => return Ok(false),
        };
        // Another instance's slices: that deployment keeps this Service in slice mode, and an
        // Endpoints object from this one would be mirrored beside them.
        if let Some(theirs) = listed
            .iter()
            .find(|s| is_epcheck_slice(s, &self.service) && !self.is_own(s))
        {
            check_instance(
                "EndpointSlice",
                || theirs.key(),
                &theirs.metadata.labels,
                self.instance.as_deref(),
            )?;
        }
        if !listed.iter().any(|s| self.is_own(s)) {
            self.state.store(DONE, Ordering::Relaxed);
            return Ok(false);
        }
        self.state.store(PENDING, Ordering::Relaxed);
        let Some(renderer) = &self.slices else {
            return Ok(true);
        };
        match reconcile_slices(client, renderer, ready, not_ready, ReconcileMode::Apply).await {
            Ok(_) => {}
            Err(e) if e.api_kind() == Some(ApiErrorKind::Forbidden) => self.forbidden(&e),
            // The Service is gone (its slices go with it) or has a selector (its slices were
            // just deleted): the Endpoints reconcile reports that.
            Err(Error::SliceServiceMissing { .. } | Error::SelectorOwned { .. }) => {}
            Err(e) => {
                // The Endpoints object is written regardless; finish() may still hand over.
                tracing::warn!(
                    service = %self.key(), error = %e,
                    "could not bring epcheck's EndpointSlices to the current health while handing the Service over to mode: endpoints"
                );
            }
        }
        Ok(true)
    }

    /// Step 3, after the Endpoints write: deletes epcheck's slices when the mirroring
    /// controller's slices show exactly `ready`.
    ///
    /// # Errors
    /// [`Error::SliceHandOver`] when the list or a delete fails (but for `403`).
    pub(super) async fn finish(&self, client: &Client, ready: &[IpAddr]) -> Result<(), Error> {
        let step = "listing the Service's EndpointSlices after the Endpoints write";
        let Some(listed) = self.list(client, step).await? else {
            return Ok(());
        };
        let (own, others): (Vec<EndpointSlice>, Vec<EndpointSlice>) =
            listed.into_iter().partition(|s| self.is_own(s));
        if own.is_empty() {
            self.state.store(DONE, Ordering::Relaxed);
            return Ok(());
        }
        let mirrored = mirrored_ready(&others);
        let wanted: BTreeSet<String> = ready.iter().map(ToString::to_string).collect();
        if mirrored != wanted {
            tracing::debug!(
                service = %self.key(),
                mirrored = %mirrored.into_iter().collect::<Vec<_>>().join(","),
                "the mirroring controller's EndpointSlices do not show the healthy backends yet; keeping epcheck's"
            );
            return Ok(());
        }
        let mut deleted = Vec::new();
        for slice in &own {
            match client.delete_endpoint_slice(&self.namespace, slice).await {
                Ok(_) => deleted.push(slice.name().to_owned()),
                Err(e) if e.api_kind() == Some(ApiErrorKind::Forbidden) => {
                    self.forbidden(&e);
                    return Ok(());
                }
                // Changed since the list (a precondition failed): look again next time.
                Err(e) if e.is_conflict() => return Ok(()),
                Err(e) => {
                    return Err(self.failed("deleting epcheck's EndpointSlice", e));
                }
            }
        }
        self.state.store(DONE, Ordering::Relaxed);
        tracing::info!(
            service = %self.key(), deleted = %deleted.join(","),
            "handed the Service over to mode: endpoints: the mirroring controller's EndpointSlices show the healthy backends; deleted epcheck's"
        );
        Ok(())
    }

    /// The Service's slices; `None` when there is nothing to look at (`403`, `404`).
    async fn list(
        &self,
        client: &Client,
        step: &'static str,
    ) -> Result<Option<Vec<EndpointSlice>>, Error> {
        match client
            .list_service_endpoint_slices(&self.namespace, &self.service)
            .await
        {
            Ok(listed) => Ok(Some(listed)),
            Err(e) if e.api_kind() == Some(ApiErrorKind::Forbidden) => {
                self.forbidden(&e);
                Ok(None)
            }
            Err(e) if e.is_not_found() => {
                tracing::debug!(
                    service = %self.key(), error = %e,
                    "no EndpointSlice API: nothing to hand over from mode: endpointslice"
                );
                self.state.store(DONE, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(self.failed(step, e)),
        }
    }

    /// A `403`: says once what the hand-over needs, and stops trying (until a restart, which
    /// redeploying with new RBAC brings).
    fn forbidden(&self, error: &Error) {
        self.state.store(DONE, Ordering::Relaxed);
        if self.warned_forbidden.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::error!(
            service = %self.key(), error = %error,
            "epcheck may not read or remove the EndpointSlices it wrote for this Service in mode: endpointslice, so it cannot hand the Service over to mode: endpoints: \
             kube-proxy may keep reading those slices, stale. Grant epcheck's service account, in namespace {ns:?}, a Role with list, update and delete on endpointslices \
             (API group discovery.k8s.io), as `epcheck manifests` prints for mode: endpoints, and restart epcheck; or delete the slices labelled \
             endpointslice.kubernetes.io/managed-by=epcheck.io,kubernetes.io/service-name={svc} by hand. The Endpoints object is still written.",
            ns = self.namespace,
            svc = self.service,
        );
    }

    fn failed(&self, step: &'static str, error: Error) -> Error {
        Error::SliceHandOver {
            service: self.key(),
            step,
            source: Box::new(error),
        }
    }

    /// One of epcheck's slices of this Service, of this instance or of none.
    fn is_own(&self, slice: &EndpointSlice) -> bool {
        is_epcheck_slice(slice, &self.service)
            && check_instance(
                "EndpointSlice",
                String::new,
                &slice.metadata.labels,
                self.instance.as_deref(),
            )
            .is_ok()
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }
}
