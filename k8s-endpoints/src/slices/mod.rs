//! `discovery.k8s.io/v1` EndpointSlices for `mode: endpointslice` (SPEC §9): the offline half.
//!
//! * [`types`] — the wire types ([`EndpointSlice`], [`SliceEndpoint`], [`SlicePort`]), which
//!   keep unknown fields;
//! * [`render`](mod@render) — [`SliceRenderer`]: the desired slices of a Service (labels, owner
//!   reference, one `addressType` per slice, at most 100 endpoints each, deterministic names,
//!   sticky placement);
//! * [`diff`](mod@diff) — [`plan`]: comparing desired and live slices by meaning and listing
//!   the writes (creates, then updates, then deletes);
//! * [`change`] — [`SlicesDiff`]: what changed, slice by slice, as one short line.
//!
//! The online half is [`reconcile_slices`](crate::client::reconcile_slices) and the
//! EndpointSlice methods of [`Client`](crate::client::Client).
//!
//! # Example
//!
//! ```
//! use std::net::IpAddr;
//! use k8s_endpoints::slices::{SliceRenderer, plan};
//! use k8s_endpoints::{EndpointPort, NotReadyPolicy};
//!
//! # fn main() -> Result<(), k8s_endpoints::Error> {
//! let port = EndpointPort { port: 6379, ..EndpointPort::default() };
//! let renderer = SliceRenderer::new("default", "redis", &[port], NotReadyPolicy::Keep)?;
//! let ready: Vec<IpAddr> = vec!["198.51.100.10".parse().unwrap(), "2001:db8::10".parse().unwrap()];
//! let failing: Vec<IpAddr> = vec!["198.51.100.11".parse().unwrap()];
//!
//! // The Service's uid comes from a GET of the Service; `live` from listing the slices.
//! let desired = renderer.render("3f1c…", &ready, &failing, &[]);
//! assert_eq!(desired.len(), 2); // one IPv4 slice, one IPv6 slice
//! assert_eq!(desired[0].metadata.name.as_deref(), Some("redis-epcheck-ipv4-0"));
//! let writes = plan(&[], &desired);
//! assert_eq!(
//!     writes.diff().to_string(),
//!     "create redis-epcheck-ipv4-0 (IPv4): +198.51.100.10 +198.51.100.11(not-ready); \
//!      create redis-epcheck-ipv6-0 (IPv6): +2001:db8::10"
//! );
//! # Ok(())
//! # }
//! ```

pub mod change;
pub mod diff;
mod placement;
pub mod render;
pub mod types;

pub use change::{SliceChange, SliceWriteKind, SlicesDiff};
pub use diff::{SlicePlan, SliceWrite, apply_slice_to_live, plan};
pub use render::{
    AddressFamily, CONTROLLER_MANAGED_BY_VALUE, MAX_ENDPOINTS_PER_SLICE,
    MIRRORING_MANAGED_BY_VALUE, SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL, SLICE_MANAGED_BY_VALUE,
    SliceRenderer, epcheck_selector, is_epcheck_slice, mirrored_ready, service_owner_reference,
};
pub use types::{
    ENDPOINT_SLICE_API_VERSION, ENDPOINT_SLICE_KIND, EndpointConditions, EndpointSlice,
    EndpointSliceList, SliceEndpoint, SlicePort,
};
