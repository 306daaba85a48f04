//! A small, hand-written Kubernetes ApiServer client for `v1` `Endpoints`, the part of
//! [epcheck] that keeps the Endpoints of selector-less Services equal to the set of healthy
//! backends.
//!
//! Its client and reconciler know nothing of probing or Redis. Its offline half is:
//!
//! * [`token`] — where the bearer token comes from (`token_file`) and reading it as a secret;
//! * [`path`] — the `endpointapi` template (`/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints`)
//!   and the name checks that keep configured values inside their URL;
//! * [`types`] — the Endpoints and `Status` wire types, which keep unknown fields so that a
//!   read-modify-write loses nothing;
//! * [`codec`] — JSON and YAML bodies and the `content_type` setting;
//! * [`render`] — the desired object from the template and the probe results, and the body of
//!   a `PUT` from the live object;
//! * [`diff`](mod@diff) — comparing two objects by meaning, so that equal means no write;
//! * [`slices`] — `discovery.k8s.io/v1` EndpointSlices for `mode: endpointslice`: types,
//!   rendering (labels, owner reference, one family and at most 100 endpoints per slice) and
//!   the plan of writes ([`reconcile_slices`](client::reconcile_slices) is its online half).
//!
//! The online half, [`client`], builds on these: [`ClientConfig`] (base URL or the in-cluster
//! environment, TLS, token and CA reload), [`Client`] (get/replace/create Endpoints, get a
//! Service, `/version`, with typed [`ApiError`]s and bounded retries) and
//! [`reconcile()`](client::reconcile()). [`writer`] chooses what a service is written to
//! (Endpoints or slices, skip-mirror, the hand-over between the two, what the server's version
//! allows); [`instance`] keeps two epcheck deployments off each other's objects; [`election`]
//! elects one writer among replicas, and [`consensus`] lets the replicas agree before a backend
//! is removed (each publishes its view; the leader counts the fresh ones).
//!
//! [`daemon`] ties it all together with probing ([probe-core]) and a state store
//! ([state-store]'s trait), from a typed [`DaemonSpec`](daemon::DaemonSpec):
//!
//! ```text
//!  DaemonSpec ─► targets ─► probe ─► health (rise/fall, fail-safe) ─► reconcile ─► ApiServer
//!                                                                         └──────► StateStore
//!  observers (metrics, notifications, /status, yours) see every step on the side
//! ```
//!
//! `examples/keep_endpoints.rs` runs that whole job in under 80 lines.
//!
//! # Example
//!
//! Render the object for a service with two healthy backends and one failing one, compare it
//! with what the ApiServer holds, and build the body of the `PUT`:
//!
//! ```
//! use std::net::IpAddr;
//! use k8s_endpoints::{
//!     ContentType, Endpoints, NotReadyPolicy, PathTemplate, Renderer, apply_to_live, codec, diff,
//! };
//!
//! # fn main() -> Result<(), k8s_endpoints::Error> {
//! // From the config file.
//! let template: Endpoints = codec::from_yaml(
//!     "kind: Endpoints\napiVersion: v1\nmetadata: {name: ceph, namespace: default}\n\
//!      subsets:\n- addresses: [{ip: 10.0.0.71}]\n  ports: [{port: 8080, protocol: TCP}]\n",
//! )?;
//! let paths = PathTemplate::parse("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints")?;
//! let renderer = Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep)?;
//! assert_eq!(paths.object_path("default", "redis")?, "/api/v1/namespaces/default/endpoints/redis");
//!
//! // From the probes.
//! let ready: Vec<IpAddr> = vec!["198.51.100.2".parse().unwrap(), "198.51.100.1".parse().unwrap()];
//! let failing: Vec<IpAddr> = vec!["198.51.100.3".parse().unwrap()];
//!
//! // From a GET of the object (here: one that still lists a dead backend as ready).
//! let live: Endpoints = codec::from_json(br#"{"apiVersion":"v1","kind":"Endpoints",
//!     "metadata":{"name":"redis","namespace":"default","resourceVersion":"42"},
//!     "subsets":[{"addresses":[{"ip":"198.51.100.1"},{"ip":"198.51.100.3"}],
//!                 "ports":[{"port":8080}]}]}"#)?;
//!
//! let desired = renderer.render(&ready, &failing, Some(&live));
//! let changes = diff(&live, &desired);
//! assert_eq!(
//!     changes.to_string(),
//!     "+198.51.100.2 -198.51.100.3 +198.51.100.3(not ready) label app.kubernetes.io/managed-by missing"
//! );
//! if !changes.is_empty() {
//!     let body = apply_to_live(&live, &desired);
//!     assert_eq!(body.metadata.resource_version.as_deref(), Some("42"));
//!     let bytes = codec::encode(&body, ContentType::Yaml)?;
//!     assert!(String::from_utf8_lossy(&bytes).contains("notReadyAddresses"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [epcheck]: https://github.com/epcheck/epcheck
//! [probe-core]: https://docs.rs/probe-core
//! [state-store]: https://docs.rs/state-store

pub mod client;
pub mod codec;
pub mod consensus;
pub mod daemon;
pub mod diff;
pub mod election;
pub mod error;
pub mod instance;
pub mod path;
pub mod render;
pub mod slices;
pub mod time;
pub mod token;
pub mod types;
pub mod writer;

pub use client::{
    ApiError, ApiErrorKind, Client, ClientConfig, Lease, LeaseSpec, ReconcileAction, ReconcileMode,
    ReconcileOutcome, RequestObserver, ServiceInfo, TokenSource, TransportKind, VersionInfo,
    escape_control,
};
pub use codec::{ContentType, to_json, to_yaml};
pub use diff::{EndpointsDiff, PortKey, diff};
pub use error::Error;
pub use instance::{
    DEFAULT_INSTANCE, INSTANCE_LABEL, check_instance, instance_of, validate_instance,
};
pub use path::{PathTemplate, validate_name, validate_namespace};
pub use render::{
    MANAGED_BY_LABEL, MANAGED_BY_VALUE, ManagedBy, NotReadyPolicy, Renderer, SKIP_MIRROR_LABEL,
    apply_to_live, managed_by, mark_skip_mirror,
};
pub use token::{Token, TokenLocation, read_token};
pub use types::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectMeta, ObjectReference,
    OwnerReference, Status, StatusCause, StatusDetails,
};

/// Compiles the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
