//! What a service's healthy set is written to: its v1 Endpoints object (`mode: endpoints`, the
//! original behaviour) or discovery.k8s.io/v1 EndpointSlices (`mode: endpointslice`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_endpoints::client::{ReconcileMode, reconcile, reconcile_slices};
use k8s_endpoints::slices::SliceRenderer;
use k8s_endpoints::{Client, ManagedBy, ReconcileAction, Renderer, managed_by, mark_skip_mirror};

use crate::config::Mode;

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
}

/// Renders and writes one service's objects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ObjectWriter {
    renderer: Renderer,
    slices: Option<SliceRenderer>,
    /// Endpoints left from `mode: endpoints` were checked for the skip-mirror label.
    mirror_checked: Arc<AtomicBool>,
}

impl ObjectWriter {
    /// A writer for `mode` from the service's Endpoints renderer.
    ///
    /// # Errors
    /// When the EndpointSlice renderer rejects the ports or names.
    pub fn new(renderer: Renderer, mode: Mode) -> Result<Self, k8s_endpoints::Error> {
        let slices = match mode {
            Mode::EndpointSlice => Some(SliceRenderer::from_renderer(&renderer)?),
            Mode::Endpoints => None,
        };
        Ok(ObjectWriter {
            renderer,
            slices,
            mirror_checked: Arc::new(AtomicBool::new(false)),
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
    ) -> Result<WriteOutcome, k8s_endpoints::Error> {
        match &self.slices {
            None => {
                let o = reconcile(client, &self.renderer, ready, not_ready, mode).await?;
                Ok(WriteOutcome {
                    action: o.action,
                    change: o.diff.to_string(),
                    resource_version: o.object.metadata.resource_version,
                    conflicts: o.conflicts,
                })
            }
            Some(slices) => {
                if mode == ReconcileMode::Apply && !self.mirror_checked.load(Ordering::Relaxed) {
                    self.stop_mirroring(client).await?;
                    self.mirror_checked.store(true, Ordering::Relaxed);
                }
                let o = reconcile_slices(client, slices, ready, not_ready, mode).await?;
                Ok(WriteOutcome {
                    action: o.action,
                    change: o.diff.to_string(),
                    resource_version: None,
                    conflicts: o.conflicts,
                })
            }
        }
    }

    /// In EndpointSlice mode, an Endpoints object that epcheck wrote before (`mode: endpoints`)
    /// would be mirrored into the controller's own slices — stale backends kept in service.
    /// It gets `endpointslice.kubernetes.io/skip-mirror: "true"` once (SPEC §9).
    async fn stop_mirroring(&self, client: &Client) -> Result<(), k8s_endpoints::Error> {
        let Some(mut live) = client.get_endpoints(self.namespace(), self.name()).await? else {
            return Ok(());
        };
        if managed_by(&live) == ManagedBy::Epcheck && mark_skip_mirror(&mut live) {
            client.replace_endpoints(&live).await?;
            tracing::info!(
                object = %format!("{}/{}", self.namespace(), self.name()),
                "labelled the Endpoints object left from mode: endpoints skip-mirror"
            );
        }
        Ok(())
    }
}
