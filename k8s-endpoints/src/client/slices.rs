//! EndpointSlices on the ApiServer (SPEC §9, `mode: endpointslice`): list, create, replace
//! and delete, and [`reconcile_slices`], the unit the daemon calls for one Service.
//!
//! Paths are `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]` (after the
//! same prefix as the Endpoints template, e.g. a proxy's). Slices are created with `POST`:
//! the ApiServer does not create them on `PUT`. Creating with `POST` cannot be restricted by
//! name in RBAC, so this mode needs `create` on all endpointslices of the namespace, plus
//! `list`, `update` and `delete` (SPEC §10).
//!
//! # `reconcile_slices`
//!
//! 1. `GET` the Service. Missing: [`Error::SliceServiceMissing`] (the slices need its uid for
//!    their owner reference). With a selector: the endpointslice controller owns its slices,
//!    so epcheck deletes its own slices of that Service (a dry run only lists them) and
//!    returns [`Error::SelectorOwned`]; it manages the Service again once the selector is
//!    gone.
//! 2. `GET` the slices labelled as epcheck's for this Service, render the desired set
//!    ([`SliceRenderer::render`]), and [`plan`] the writes by meaning.
//! 3. Write in this order: creates (`POST`), updates (`PUT` with the `resourceVersion` read),
//!    deletes (`DELETE` with the uid and `resourceVersion` read as preconditions, `404`
//!    tolerated). A Service's endpoints are spread over several objects that cannot be
//!    written atomically; this order keeps every endpoint that should stay reachable in some
//!    slice at every moment, since the renderer only moves endpoints out of slices that are
//!    about to be deleted. An error midway leaves the earlier writes in place (a consistent
//!    state, at worst with an endpoint briefly listed twice, which consumers merge) and is
//!    returned; the next pass finishes the job.
//! 4. A lost race (`409 Conflict`, `AlreadyExists`, a slice gone before its update) re-reads
//!    and re-plans, a few times with short jittered waits
//!    ([`ClientConfig::conflict_retry`](super::ClientConfig::conflict_retry)).
//!
//! [`ReconcileMode::DryRun`] reads and reports what it would write.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::Method;
use serde_json::json;

use super::Client;
use super::error::ApiErrorKind;
use super::object_ref::{self, ObjectRef};
use super::reconcile::{ReconcileAction, ReconcileMode};
use super::request::{Action, Request};
use super::retry::Backoff;
use super::service::ServiceInfo;
use crate::codec;
use crate::error::{Error, SliceCleanup};
use crate::instance::check_instance;
use crate::path::{check_name, check_namespace};
use crate::slices::{
    ENDPOINT_SLICE_KIND, EndpointSlice, EndpointSliceList, SERVICE_NAME_LABEL,
    SLICE_MANAGED_BY_LABEL, SliceChange, SlicePlan, SliceRenderer, SliceWriteKind, SlicesDiff,
    epcheck_selector, is_epcheck_slice, plan,
};

impl Client {
    /// Lists the EndpointSlices epcheck manages for `service`: a `GET` of the collection with
    /// `labelSelector=kubernetes.io/service-name=<service>,endpointslice.kubernetes.io/managed-by=epcheck.io`.
    /// Items get their `apiVersion` and `kind` filled in.
    ///
    /// The reply must be an `EndpointSliceList` whose every item is an EndpointSlice in
    /// `namespace` carrying both labels: anything else is [`Error::UnexpectedObject`], so that
    /// nothing is written from it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::Api`] for any answer
    /// but `200` (a `403` says that epcheck needs `list` on endpointslices);
    /// [`Error::Transport`]; [`Error::InvalidResponse`] when the body is not a list;
    /// [`Error::UnexpectedObject`].
    pub async fn list_endpoint_slices(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<EndpointSlice>, Error> {
        check_name(service)?;
        self.list_slices_labelled(namespace, &epcheck_selector(service), |item| {
            is_epcheck_slice(item, service)
        })
        .await
    }

    /// Lists every EndpointSlice labelled `kubernetes.io/service-name=<service>`, whoever
    /// manages it (epcheck, the mirroring controller, the endpointslice controller): what
    /// kube-proxy reads for the Service. Items get their `apiVersion` and `kind` filled in.
    ///
    /// The reply must be an `EndpointSliceList` whose every item is an EndpointSlice in
    /// `namespace` carrying that label: anything else is [`Error::UnexpectedObject`].
    ///
    /// # Errors
    ///
    /// As [`list_endpoint_slices`](Self::list_endpoint_slices).
    pub async fn list_service_endpoint_slices(
        &self,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<EndpointSlice>, Error> {
        check_name(service)?;
        let selector = format!("{SERVICE_NAME_LABEL}={service}");
        self.list_slices_labelled(namespace, &selector, |item| {
            item.metadata
                .labels
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str)
                == Some(service)
        })
        .await
    }

    /// `GET` of the collection with `selector`; every item must be an EndpointSlice of
    /// `namespace` that `wanted` accepts.
    pub(super) async fn list_slices_labelled(
        &self,
        namespace: &str,
        selector: &str,
        wanted: impl Fn(&EndpointSlice) -> bool,
    ) -> Result<Vec<EndpointSlice>, Error> {
        let path = format!(
            "{}?labelSelector={}",
            self.slices_path(namespace)?,
            encode_query(selector)
        );
        let req = slice_request(Method::GET, path, None, "list", namespace, None);
        let resp = self.execute(&req).await.map_err(|e| with_hint(e, &req))?;
        let list: EndpointSliceList = self.decode(&req, &resp)?;
        let list_kind = list
            .extra
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        let asked = || format!("the EndpointSlices in namespace {namespace} labelled {selector}");
        if list_kind != "EndpointSliceList" {
            let got = format!(
                "a {} instead of an EndpointSliceList",
                or_unknown(list_kind)
            );
            return Err(object_ref::unexpected(self, &req, asked(), got));
        }
        for item in &list.items {
            let kind_ok = item.kind.is_empty() || item.kind == ENDPOINT_SLICE_KIND;
            let ns_ok = item.metadata.namespace.as_deref() == Some(namespace);
            if !(kind_ok && ns_ok && wanted(item)) {
                let kind = if item.kind.is_empty() {
                    ENDPOINT_SLICE_KIND
                } else {
                    &item.kind
                };
                let what = object_ref::described_as(
                    kind,
                    item.metadata.namespace.as_deref(),
                    item.metadata.name.as_deref(),
                );
                let labels: Vec<String> = [SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL]
                    .iter()
                    .map(|k| {
                        let v = item
                            .metadata
                            .labels
                            .get(*k)
                            .map_or("(none)", String::as_str);
                        format!("{k}={v}")
                    })
                    .collect();
                let got = format!("a list holding {what} labelled {}", labels.join(","));
                return Err(object_ref::unexpected(self, &req, asked(), got));
            }
        }
        Ok(list
            .items
            .into_iter()
            .map(EndpointSlice::with_type_meta)
            .collect())
    }

    /// Creates an EndpointSlice in `namespace` with `POST` to the collection (server metadata
    /// such as `resourceVersion` and `uid` is dropped from the body first). The URL is made
    /// from `namespace` only; the reply must be the slice sent.
    ///
    /// # Errors
    ///
    /// As [`list_endpoint_slices`](Self::list_endpoint_slices);
    /// [`ApiErrorKind::AlreadyExists`] when a slice of that name exists;
    /// [`Error::InvalidObjectName`] when the slice names another namespace (nothing is sent).
    pub async fn create_endpoint_slice(
        &self,
        namespace: &str,
        slice: &EndpointSlice,
    ) -> Result<EndpointSlice, Error> {
        let target = target(namespace, slice)?;
        let mut body = slice.clone().with_type_meta();
        body.metadata.namespace = Some(namespace.to_owned());
        body.metadata.resource_version = None;
        body.metadata.uid = None;
        body.metadata.creation_timestamp = None;
        body.metadata.generation = None;
        body.metadata.managed_fields.clear();
        let encoded = codec::encode(&body, self.inner.content_type)?;
        let req = slice_request(
            Method::POST,
            self.slices_path(namespace)?,
            Some(encoded),
            "create",
            namespace,
            Some(target.name),
        );
        let resp = self.execute(&req).await.map_err(|e| with_hint(e, &req))?;
        self.decode_checked(&req, &resp, target)
    }

    /// Replaces an EndpointSlice of `namespace` with `PUT` to its URL (made from `namespace`
    /// and the slice's name). The body's `resourceVersion` (the one read) makes the ApiServer
    /// refuse the write with `409 Conflict` if someone else wrote in between.
    ///
    /// # Errors
    ///
    /// As [`create_endpoint_slice`](Self::create_endpoint_slice); `404` when the slice does
    /// not exist (slices are not created on update).
    pub async fn replace_endpoint_slice(
        &self,
        namespace: &str,
        slice: &EndpointSlice,
    ) -> Result<EndpointSlice, Error> {
        let target = target(namespace, slice)?;
        if slice.metadata.resource_version.is_none() {
            tracing::debug!(slice = %target, "replacing an EndpointSlice without a resourceVersion (unconditional update)");
        }
        let body = slice.clone().with_type_meta();
        let req = slice_request(
            Method::PUT,
            format!("{}/{}", self.slices_path(namespace)?, target.name),
            Some(codec::encode(&body, self.inner.content_type)?),
            "update",
            namespace,
            Some(target.name),
        );
        let resp = self.execute(&req).await.map_err(|e| with_hint(e, &req))?;
        self.decode_checked(&req, &resp, target)
    }

    /// Deletes an EndpointSlice of `namespace`, with its `uid` and `resourceVersion` (when
    /// set) as preconditions, so that a slice someone changed since it was read is not deleted
    /// (`409 Conflict`). Returns `false` when it was already gone (`404`).
    ///
    /// # Errors
    ///
    /// As [`create_endpoint_slice`](Self::create_endpoint_slice).
    pub async fn delete_endpoint_slice(
        &self,
        namespace: &str,
        slice: &EndpointSlice,
    ) -> Result<bool, Error> {
        let target = target(namespace, slice)?;
        let mut preconditions = serde_json::Map::new();
        if let Some(uid) = &slice.metadata.uid {
            preconditions.insert("uid".into(), json!(uid));
        }
        if let Some(rv) = &slice.metadata.resource_version {
            preconditions.insert("resourceVersion".into(), json!(rv));
        }
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
                             "preconditions": preconditions});
        let req = slice_request(
            Method::DELETE,
            format!("{}/{}", self.slices_path(namespace)?, target.name),
            Some(codec::encode(&options, self.inner.content_type)?),
            "delete",
            namespace,
            Some(target.name),
        );
        match self.execute(&req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(with_hint(e, &req)),
        }
    }

    fn slices_path(&self, namespace: &str) -> Result<String, Error> {
        check_namespace(namespace)?;
        Ok(format!(
            "{}/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
            self.inner.api_prefix
        ))
    }
}

/// The result of [`reconcile_slices`].
#[derive(Debug, Clone, PartialEq)]
pub struct SlicesOutcome {
    /// What was done: `unchanged`; `created` when the Service had no epcheck slice and every
    /// write was a create; `updated` otherwise; `would-…` in a dry run.
    pub action: ReconcileAction,
    /// Every slice written (or that would be), in write order, over all passes.
    pub diff: SlicesDiff,
    /// The Service's slices afterwards, as the ApiServer returned them (unchanged ones as
    /// listed); in a dry run, the desired ones.
    pub slices: Vec<EndpointSlice>,
    /// The Service.
    pub service: ServiceInfo,
    /// How many races were met (and retried) on the way.
    pub conflicts: u32,
}

/// Brings one Service's EndpointSlices to the desired state; see the module docs.
///
/// # Errors
///
/// [`Error::SliceServiceMissing`]; [`Error::SelectorOwned`];
/// [`Error::SliceConflictRetriesExhausted`] when every pass lost a race; otherwise the first
/// error of a request (after that request's own retries), with nothing written after it.
pub async fn reconcile_slices(
    client: &Client,
    renderer: &SliceRenderer,
    ready: &[IpAddr],
    not_ready: &[IpAddr],
    mode: ReconcileMode,
) -> Result<SlicesOutcome, Error> {
    let (namespace, name) = (renderer.namespace(), renderer.service());
    let service = match client.get_service(namespace, name).await? {
        None => {
            return Err(Error::SliceServiceMissing {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        Some(svc) if svc.has_selector() => {
            return Err(stand_aside(client, renderer, &svc, mode).await);
        }
        Some(svc) => svc,
    };
    let Some(uid) = service.uid.clone().filter(|u| !u.is_empty()) else {
        return Err(Error::InvalidResponse {
            method: "GET".to_owned(),
            url: format!("{}/api/v1/namespaces/{namespace}/services/{name}", client.base_url()),
            problem: "the Service has no metadata.uid, which the owner reference of its EndpointSlices needs".to_owned(),
        });
    };

    let mut backoff = Backoff::new(client.conflict_retry());
    let mut conflicts = 0u32;
    let mut applied: Vec<SliceChange> = Vec::new();
    let mut had_slices: Option<bool> = None;
    loop {
        let live = client.list_endpoint_slices(namespace, name).await?;
        for slice in &live {
            check_instance(
                "EndpointSlice",
                || slice.key(),
                &slice.metadata.labels,
                renderer.instance(),
            )?;
        }
        let had = *had_slices.get_or_insert(!live.is_empty());
        let desired = renderer.render(&uid, ready, not_ready, &live);
        let plan = plan(&live, &desired);
        if mode == ReconcileMode::DryRun {
            let diff = plan.diff();
            return Ok(SlicesOutcome {
                action: action(&diff.changes, had, mode),
                diff,
                slices: desired,
                service,
                conflicts,
            });
        }
        let before = applied.len();
        match write(client, namespace, &plan, &mut applied).await {
            Ok(written) => {
                if applied.len() > before {
                    // The daemon logs the write with its service; an embedder may too.
                    tracing::debug!(
                        namespace, service = name, changes = %plan.diff(),
                        "EndpointSlices written"
                    );
                }
                let slices = desired
                    .iter()
                    .map(|d| {
                        written
                            .get(d.name())
                            .or_else(|| live.iter().find(|l| l.name() == d.name()))
                            .cloned()
                            .unwrap_or_else(|| d.clone())
                    })
                    .collect();
                return Ok(SlicesOutcome {
                    action: action(&applied, had, mode),
                    diff: SlicesDiff { changes: applied },
                    slices,
                    service,
                    conflicts,
                });
            }
            Err(Failure::Race(error)) => {
                conflicts += 1;
                let Some(delay) = backoff.next_delay(None) else {
                    return Err(Error::SliceConflictRetriesExhausted {
                        service: format!("{namespace}/{name}"),
                        attempts: conflicts,
                        source: Box::new(error),
                    });
                };
                tracing::info!(
                    namespace, service = name, error = %error,
                    "EndpointSlices changed while epcheck was writing them; reading them again"
                );
                tokio::time::sleep(delay).await;
            }
            Err(Failure::Fatal(error)) => return Err(error),
        }
    }
}

/// The Service has a selector, so the endpointslice controller writes its slices: epcheck
/// deletes its own — those of its instance or of none (so kube-proxy does not keep routing to
/// addresses it probed next to the controller's) — and reports [`Error::SelectorOwned`]. A dry run only lists them.
async fn stand_aside(
    client: &Client,
    renderer: &SliceRenderer,
    svc: &ServiceInfo,
    mode: ReconcileMode,
) -> Error {
    let (namespace, name) = (renderer.namespace(), renderer.service());
    let mut deleted_slices = Vec::new();
    let mut cleanup_error = None;
    match client.list_endpoint_slices(namespace, name).await {
        Ok(own) => {
            // Another instance's slices are that instance's to clean up.
            let ours = own.iter().filter(|s| {
                check_instance(
                    "EndpointSlice",
                    String::new,
                    &s.metadata.labels,
                    renderer.instance(),
                )
                .is_ok()
            });
            for slice in ours {
                if mode == ReconcileMode::DryRun {
                    deleted_slices.push(slice.name().to_owned());
                    continue;
                }
                match client.delete_endpoint_slice(namespace, slice).await {
                    Ok(_) => deleted_slices.push(slice.name().to_owned()),
                    Err(e) => {
                        cleanup_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => cleanup_error = Some(e.to_string()),
    }
    if mode == ReconcileMode::Apply && !deleted_slices.is_empty() {
        tracing::warn!(
            namespace, service = name, selector = %svc.selector_text(),
            deleted = %deleted_slices.join(","),
            "the Service has a selector: deleted epcheck's EndpointSlices for it"
        );
    }
    Error::SelectorOwned {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        selector: svc.selector_text(),
        cleanup: Some(Box::new(SliceCleanup {
            deleted: deleted_slices,
            error: cleanup_error,
            dry_run: mode == ReconcileMode::DryRun,
        })),
    }
}

/// Why a pass of writes stopped.
enum Failure {
    /// Lost a race with another writer: read again.
    Race(Error),
    /// Anything else.
    Fatal(Error),
}

/// Sends a plan's writes in order; returns the created and updated slices by name. Each
/// successful write is appended to `applied`.
async fn write(
    client: &Client,
    namespace: &str,
    plan: &SlicePlan,
    applied: &mut Vec<SliceChange>,
) -> Result<BTreeMap<String, EndpointSlice>, Failure> {
    let mut written = BTreeMap::new();
    for w in &plan.writes {
        let result = match w.change.kind {
            SliceWriteKind::Create => client
                .create_endpoint_slice(namespace, &w.object)
                .await
                .map(Some),
            SliceWriteKind::Update => client
                .replace_endpoint_slice(namespace, &w.object)
                .await
                .map(Some),
            SliceWriteKind::Delete => client
                .delete_endpoint_slice(namespace, &w.object)
                .await
                .map(|_| None),
        };
        match result {
            Ok(Some(slice)) => {
                written.insert(slice.name().to_owned(), slice.with_type_meta());
            }
            Ok(None) => {}
            // A create found the name taken; an update or delete found the slice changed or
            // gone since it was read.
            Err(e)
                if e.api_kind() == Some(ApiErrorKind::AlreadyExists)
                    || e.is_conflict()
                    || (e.is_not_found() && w.change.kind == SliceWriteKind::Update) =>
            {
                return Err(Failure::Race(e));
            }
            Err(e) => return Err(Failure::Fatal(e)),
        }
        tracing::debug!(change = %w.change, "EndpointSlice written");
        applied.push(w.change.clone());
    }
    Ok(written)
}

fn action(changes: &[SliceChange], had_slices: bool, mode: ReconcileMode) -> ReconcileAction {
    let all_creates = changes.iter().all(|c| c.kind == SliceWriteKind::Create);
    match (changes.is_empty(), !had_slices && all_creates, mode) {
        (true, _, _) => ReconcileAction::Unchanged,
        (false, true, ReconcileMode::Apply) => ReconcileAction::Created,
        (false, false, ReconcileMode::Apply) => ReconcileAction::Updated,
        (false, true, ReconcileMode::DryRun) => ReconcileAction::WouldCreate,
        (false, false, ReconcileMode::DryRun) => ReconcileAction::WouldUpdate,
    }
}

fn slice_request(
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    verb: &'static str,
    namespace: &str,
    name: Option<&str>,
) -> Request {
    Request {
        method,
        path,
        body,
        action: Action {
            verb,
            resource: "endpointslices",
            namespace: Some(namespace.to_owned()),
            name: name.map(str::to_owned),
        },
    }
}

/// Replaces the Endpoints-specific RBAC hint of a `403` with this mode's.
fn with_hint(mut error: Error, req: &Request) -> Error {
    if let Error::Api(api) = &mut error
        && api.kind() == ApiErrorKind::Forbidden
    {
        let ns = req.action.namespace.as_deref().unwrap_or_default();
        api.hint = format!(
            "epcheck's identity may not {} endpointslices in namespace {ns:?}; mode: endpointslice needs, in that namespace, a Role with get, list, create, update and delete on endpointslices (API group discovery.k8s.io; create cannot be restricted by name) and get on services, bound to its service account (`epcheck manifests` prints one)",
            req.action.verb
        );
    }
    error
}

/// The slice of `namespace` to write: its name (checked for a URL), and its metadata must
/// not name another namespace.
fn target<'a>(namespace: &'a str, slice: &'a EndpointSlice) -> Result<ObjectRef<'a>, Error> {
    let name = slice
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| Error::InvalidObjectName {
            what: "EndpointSlice name",
            value: String::new(),
            problem: "the EndpointSlice to write has none in its metadata".to_owned(),
        })?;
    check_name(name)?;
    let target = ObjectRef::new(ENDPOINT_SLICE_KIND, namespace, name);
    target.check_body(&slice.metadata)?;
    Ok(target)
}

pub(super) fn or_unknown(kind: &str) -> &str {
    if kind.is_empty() {
        "reply without a kind"
    } else {
        kind
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub(super) fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn selector_is_encoded() {
        assert_eq!(
            encode_query(&epcheck_selector("redis")),
            "kubernetes.io%2Fservice-name%3Dredis%2Cendpointslice.kubernetes.io%2Fmanaged-by%3Depcheck.io"
        );
    }

    #[test]
    fn actions() {
        let change = |kind| {
            let mut p = plan(&[], &[EndpointSlice::new("d", "s", "IPv4")]);
            let mut c = p.writes.remove(0).change;
            c.kind = kind;
            c
        };
        let create = change(SliceWriteKind::Create);
        let update = change(SliceWriteKind::Update);
        let apply = ReconcileMode::Apply;
        assert_eq!(action(&[], true, apply), ReconcileAction::Unchanged);
        assert_eq!(
            action(std::slice::from_ref(&create), false, apply),
            ReconcileAction::Created
        );
        assert_eq!(
            action(std::slice::from_ref(&create), true, apply),
            ReconcileAction::Updated
        );
        assert_eq!(
            action(&[create, update], false, apply),
            ReconcileAction::Updated
        );
        let dry = ReconcileMode::DryRun;
        assert_eq!(
            action(&[change(SliceWriteKind::Delete)], true, dry),
            ReconcileAction::WouldUpdate
        );
        assert_eq!(
            action(&[change(SliceWriteKind::Create)], false, dry),
            ReconcileAction::WouldCreate
        );
    }

    #[test]
    fn names_are_required_and_the_namespace_is_the_callers() {
        let mut s = EndpointSlice::new("default", "x", "IPv4");
        assert_eq!(target("default", &s).unwrap().name, "x");
        assert!(target("kube-system", &s).is_err());
        s.metadata.namespace = None;
        assert_eq!(target("kube-system", &s).unwrap().namespace, "kube-system");
        s.metadata.name = None;
        assert!(
            target("default", &s)
                .unwrap_err()
                .to_string()
                .contains("EndpointSlice name")
        );
    }
}
