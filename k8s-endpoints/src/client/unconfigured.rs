//! Objects an epcheck instance wrote for Services that are no longer in its config (SPEC §9).
//!
//! When a Service leaves the config, nothing keeps its Endpoints object or EndpointSlices
//! current any more: they freeze at the last healthy set, and kube-proxy keeps routing by them.
//! [`Client::find_unconfigured`] lists, in the namespaces given (those the config writes to, the
//! only ones epcheck's RBAC reaches), the objects labelled `epcheck.io/instance: <instance>`
//! whose Service is not configured. [`Client::prune`] hands them back, like `kubectl apply
//! --prune`, and only when asked:
//!
//! 1. the Endpoints object keeps its addresses but loses epcheck's labels
//!    (`epcheck.io/instance`, `app.kubernetes.io/managed-by: epcheck` and the
//!    `endpointslice.kubernetes.io/skip-mirror` label epcheck set), so the mirroring controller
//!    mirrors it again and whoever manages the Service next owns it;
//! 2. then the instance's EndpointSlices of that Service are deleted (with their `uid` and
//!    `resourceVersion` as preconditions) once the mirroring controller's slices show the same
//!    ready endpoints (or they show none, or there is no Endpoints object to mirror), so
//!    kube-proxy never reads the Service without them; until then they are kept
//!    ([`PruneAction::Waiting`]) and the next prune looks again. If step 1 failed for that
//!    Service they are kept as well ([`Error::PruneHeldBack`]): they are then all kube-proxy
//!    has for it.
//!
//! Objects of another instance, or without an instance label, are never listed or touched.

use std::collections::BTreeSet;
use std::fmt;

use http::Method;
use serde::Deserialize;

use super::Client;
use super::object_ref::{self, described_as};
use super::request::{Action, Request};
use super::slices::{encode_query, or_unknown};
use crate::error::Error;
use crate::instance::{INSTANCE_LABEL, instance_of};
use crate::render::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SKIP_MIRROR_LABEL};
use crate::slices::{
    ENDPOINT_SLICE_KIND, EndpointSlice, SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL,
    SLICE_MANAGED_BY_VALUE, mirrored_ready,
};
use crate::types::{ENDPOINTS_KIND, Endpoints, Extra};

/// One object of this instance whose Service is not configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Unconfigured {
    /// An Endpoints object (named like its Service).
    Endpoints(Endpoints),
    /// An EndpointSlice (its Service is its `kubernetes.io/service-name` label).
    Slice(EndpointSlice),
}

impl Unconfigured {
    /// `Endpoints` or `EndpointSlice`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Endpoints(_) => ENDPOINTS_KIND,
            Self::Slice(_) => ENDPOINT_SLICE_KIND,
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        let meta = match self {
            Self::Endpoints(e) => &e.metadata,
            Self::Slice(s) => &s.metadata,
        };
        meta.namespace.as_deref().unwrap_or_default()
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        let meta = match self {
            Self::Endpoints(e) => &e.metadata,
            Self::Slice(s) => &s.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// The name of the Service the object is for.
    pub fn service(&self) -> &str {
        match self {
            Self::Endpoints(e) => e.metadata.name.as_deref().unwrap_or_default(),
            Self::Slice(s) => s
                .metadata
                .labels
                .get(SERVICE_NAME_LABEL)
                .map_or("", String::as_str),
        }
    }
}

impl fmt::Display for Unconfigured {
    /// `EndpointSlice apps/alpha-epcheck-ipv4-0 (Service alpha)`; names come from the
    /// ApiServer, so control characters are escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!(
            "{} (Service {})",
            described_as(self.kind(), Some(self.namespace()), Some(self.name())),
            self.service()
        );
        f.write_str(&crate::escape_control(&text))
    }
}

/// What [`Client::find_unconfigured`] found.
#[derive(Debug, Default)]
pub struct UnconfiguredReport {
    /// The objects, Endpoints before slices within a namespace, each sorted by name.
    pub objects: Vec<Unconfigured>,
    /// Namespaces that could not be listed, with why (a `403` says that epcheck's Role lacks
    /// `list`).
    pub errors: Vec<(String, Error)>,
}

/// What [`Client::prune`] did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneAction {
    /// The Endpoints object lost epcheck's labels; its addresses are kept.
    Released,
    /// The EndpointSlice was deleted.
    Deleted,
    /// It was already gone, or no longer this instance's.
    Gone,
    /// The EndpointSlice is kept until the mirroring controller's slices for its Service show
    /// the same ready endpoints (the next prune looks again).
    Waiting,
}

impl PruneAction {
    /// `released`, `deleted`, `gone` or `waiting`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Deleted => "deleted",
            Self::Gone => "gone",
            Self::Waiting => "waiting",
        }
    }
}

impl fmt::Display for PruneAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct EndpointsList {
    #[serde(default)]
    items: Vec<Endpoints>,
    #[serde(flatten)]
    extra: Extra,
}

impl Client {
    /// Lists the Endpoints objects of `namespace` labelled `epcheck.io/instance=<instance>`
    /// (a `GET` of the collection the path template names, with a label selector). The reply
    /// must be an `EndpointsList` whose every item is such an object of `namespace`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace; [`Error::Api`] for any answer but
    /// `200` (a `403` says that epcheck needs `list` on endpoints); [`Error::Transport`];
    /// [`Error::InvalidResponse`]; [`Error::UnexpectedObject`].
    pub async fn list_instance_endpoints(
        &self,
        namespace: &str,
        instance: &str,
    ) -> Result<Vec<Endpoints>, Error> {
        let query = format!(
            "labelSelector={}",
            encode_query(&format!("{INSTANCE_LABEL}={instance}"))
        );
        self.list_endpoints_where(namespace, &query, |e| {
            instance_of(&e.metadata.labels) == Some(instance)
        })
        .await
    }

    /// `GET` of the Endpoints collection of `namespace` with `query`; every item must be an
    /// Endpoints object of `namespace` that `wanted` accepts.
    async fn list_endpoints_where(
        &self,
        namespace: &str,
        query: &str,
        wanted: impl Fn(&Endpoints) -> bool,
    ) -> Result<Vec<Endpoints>, Error> {
        let req = Request {
            method: Method::GET,
            path: format!("{}?{query}", self.inner.paths.collection_path(namespace)?),
            body: None,
            action: Action {
                verb: "list",
                resource: "endpoints",
                namespace: Some(namespace.to_owned()),
                name: None,
            },
        };
        let resp = self.execute(&req).await.map_err(|e| list_hint(e, &req))?;
        let list: EndpointsList = self.decode(&req, &resp)?;
        let asked = || format!("the Endpoints in namespace {namespace} with {query}");
        let list_kind = list
            .extra
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if list_kind != "EndpointsList" {
            let got = format!("a {} instead of an EndpointsList", or_unknown(list_kind));
            return Err(object_ref::unexpected(self, &req, asked(), got));
        }
        for item in &list.items {
            let meta = &item.metadata;
            let ok = (item.kind.is_empty() || item.kind == ENDPOINTS_KIND)
                && meta.namespace.as_deref() == Some(namespace)
                && wanted(item);
            if !ok {
                let what = described_as(
                    ENDPOINTS_KIND,
                    meta.namespace.as_deref(),
                    meta.name.as_deref(),
                );
                let got = format!(
                    "a list holding {what} labelled {INSTANCE_LABEL}={}",
                    instance_of(&meta.labels).unwrap_or("(none)")
                );
                return Err(object_ref::unexpected(self, &req, asked(), got));
            }
        }
        Ok(list.items)
    }

    /// Lists the EndpointSlices of `namespace` that epcheck wrote for `instance`: labelled
    /// `epcheck.io/instance=<instance>` and `endpointslice.kubernetes.io/managed-by=epcheck.io`.
    /// The second label matters: the mirroring controller copies an Endpoints object's labels,
    /// the instance label included, onto the slices it makes from it, and those are its own.
    ///
    /// # Errors
    ///
    /// As [`list_endpoint_slices`](Self::list_endpoint_slices).
    pub async fn list_instance_slices(
        &self,
        namespace: &str,
        instance: &str,
    ) -> Result<Vec<EndpointSlice>, Error> {
        let selector = format!(
            "{INSTANCE_LABEL}={instance},{SLICE_MANAGED_BY_LABEL}={SLICE_MANAGED_BY_VALUE}"
        );
        self.list_slices_labelled(namespace, &selector, |s| {
            let labels = &s.metadata.labels;
            instance_of(labels) == Some(instance)
                && labels.get(SLICE_MANAGED_BY_LABEL).map(String::as_str)
                    == Some(SLICE_MANAGED_BY_VALUE)
        })
        .await
    }

    /// The objects of `instance` in `namespaces` whose Service is not in `configured`
    /// (`(namespace, service)` pairs); see the module docs. A namespace that cannot be listed
    /// is reported in [`UnconfiguredReport::errors`] and the others are still listed.
    pub async fn find_unconfigured(
        &self,
        instance: &str,
        namespaces: &BTreeSet<String>,
        configured: &BTreeSet<(String, String)>,
    ) -> UnconfiguredReport {
        let mut report = UnconfiguredReport::default();
        let stale = |o: &Unconfigured| {
            !configured.contains(&(o.namespace().to_owned(), o.service().to_owned()))
        };
        for ns in namespaces {
            let listed = async {
                let endpoints = self.list_instance_endpoints(ns, instance).await?;
                let slices = self.list_instance_slices(ns, instance).await?;
                Ok::<_, Error>((endpoints, slices))
            };
            match listed.await {
                Ok((endpoints, slices)) => {
                    let mut found: Vec<Unconfigured> = endpoints
                        .into_iter()
                        .map(Unconfigured::Endpoints)
                        .chain(slices.into_iter().map(Unconfigured::Slice))
                        .filter(|o| stale(o))
                        .collect();
                    found.sort_by(|a, b| {
                        (a.kind() != ENDPOINTS_KIND, a.name())
                            .cmp(&(b.kind() != ENDPOINTS_KIND, b.name()))
                    });
                    report.objects.extend(found);
                }
                Err(e) => report.errors.push((ns.clone(), e)),
            }
        }
        report
    }

    /// Hands `objects` back (see the module docs): Endpoints objects first, then slices. Each
    /// object gets its own result; one failure does not stop the others.
    pub async fn prune(
        &self,
        instance: &str,
        objects: &[Unconfigured],
    ) -> Vec<Result<PruneAction, Error>> {
        let mut results = Vec::with_capacity(objects.len());
        for object in objects {
            results.push(match object {
                Unconfigured::Endpoints(e) => self.release_endpoints(instance, e).await,
                Unconfigured::Slice(_) => Ok(PruneAction::Gone),
            });
        }
        // A Service whose Endpoints object could not be handed back keeps its slices: with the
        // skip-mirror label still on that object, the mirroring controller would not replace
        // them, and the Service would be left with no slice at all.
        let held: BTreeSet<(String, String)> = objects
            .iter()
            .zip(&results)
            .filter(|(o, r)| matches!(o, Unconfigured::Endpoints(_)) && r.is_err())
            .map(|(o, _)| (o.namespace().to_owned(), o.service().to_owned()))
            .collect();
        for (object, result) in objects.iter().zip(results.iter_mut()) {
            if let Unconfigured::Slice(slice) = object {
                let service = (object.namespace().to_owned(), object.service().to_owned());
                if held.contains(&service) {
                    *result = Err(Error::PruneHeldBack {
                        slice: format!("{}/{}", object.namespace(), object.name()),
                        endpoints: format!("{}/{}", service.0, service.1),
                    });
                    continue;
                }
                *result = match self
                    .mirror_took_over(object.namespace(), object.service(), objects)
                    .await
                {
                    Ok(false) => Ok(PruneAction::Waiting),
                    Ok(true) => match self.delete_endpoint_slice(object.namespace(), slice).await {
                        Ok(true) => Ok(PruneAction::Deleted),
                        Ok(false) => Ok(PruneAction::Gone),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
            }
        }
        for (object, result) in objects.iter().zip(&results) {
            match result {
                Ok(PruneAction::Gone | PruneAction::Waiting) | Err(_) => {}
                Ok(action) => tracing::info!(object = %object, %action, "pruned"),
            }
        }
        results
    }

    /// Whether epcheck's slices of Service `namespace/service` may go: they show no ready
    /// endpoint (nothing to lose), or the mirroring controller's slices show exactly their
    /// ready endpoints, or there is no Endpoints object that it could mirror.
    async fn mirror_took_over(
        &self,
        namespace: &str,
        service: &str,
        objects: &[Unconfigured],
    ) -> Result<bool, Error> {
        let ours: BTreeSet<String> = objects
            .iter()
            .filter(|o| o.namespace() == namespace && o.service() == service)
            .filter_map(|o| match o {
                Unconfigured::Slice(s) => Some(s),
                Unconfigured::Endpoints(_) => None,
            })
            .flat_map(EndpointSlice::ready_addresses)
            .collect();
        if ours.is_empty() {
            return Ok(true);
        }
        let listed = self
            .list_service_endpoint_slices(namespace, service)
            .await?;
        if mirrored_ready(&listed) == ours {
            return Ok(true);
        }
        let query = format!(
            "fieldSelector={}",
            encode_query(&format!("metadata.name={service}"))
        );
        let named = self
            .list_endpoints_where(namespace, &query, |e| {
                e.metadata.name.as_deref() == Some(service)
            })
            .await?;
        Ok(named.is_empty())
    }

    /// Re-reads an Endpoints object and, if it is still `instance`'s, removes epcheck's labels
    /// with a `PUT` carrying the `resourceVersion` read (a `409` is returned: whoever changed it
    /// may have taken it over; the next prune decides again).
    async fn release_endpoints(
        &self,
        instance: &str,
        listed: &Endpoints,
    ) -> Result<PruneAction, Error> {
        let namespace = listed.metadata.namespace.as_deref().unwrap_or_default();
        let name = listed.metadata.name.as_deref().unwrap_or_default();
        let hint = |e| release_hint(e, namespace);
        let Some(mut live) = self.get_endpoints(namespace, name).await.map_err(hint)? else {
            return Ok(PruneAction::Gone);
        };
        if instance_of(&live.metadata.labels) != Some(instance) {
            return Ok(PruneAction::Gone);
        }
        release_labels(&mut live);
        self.replace_endpoints(namespace, name, &live)
            .await
            .map_err(hint)?;
        Ok(PruneAction::Released)
    }
}

/// Removes the labels epcheck puts on an Endpoints object it manages.
fn release_labels(endpoints: &mut Endpoints) {
    let labels = &mut endpoints.metadata.labels;
    labels.remove(INSTANCE_LABEL);
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE) {
        labels.remove(MANAGED_BY_LABEL);
    }
    if labels.get(SKIP_MIRROR_LABEL).map(String::as_str) == Some("true") {
        labels.remove(SKIP_MIRROR_LABEL);
    }
}

/// A `403` on handing an Endpoints object back gets a hint about the Role.
fn release_hint(mut error: Error, namespace: &str) -> Error {
    if let Error::Api(api) = &mut error
        && api.kind() == super::ApiErrorKind::Forbidden
    {
        api.hint = format!(
            "epcheck's identity may only read and update the Endpoints objects of configured Services in namespace {namespace:?}; handing back one whose Service left the config needs get and update on endpoints there without resourceNames (`epcheck manifests` prints that Role when the config sets prune: true)"
        );
    }
    error
}

/// A `403` on listing gets a hint about the Role.
fn list_hint(mut error: Error, req: &Request) -> Error {
    if let Error::Api(api) = &mut error
        && api.kind() == super::ApiErrorKind::Forbidden
    {
        let ns = req.action.namespace.as_deref().unwrap_or_default();
        api.hint = format!(
            "epcheck's identity may not list endpoints in namespace {ns:?}; finding the objects it wrote for Services no longer in its config needs list on endpoints there (`epcheck manifests` prints the Role)"
        );
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_object_keeps_foreign_labels_and_addresses() {
        let mut e = Endpoints::new("apps", "alpha");
        for (k, v) in [
            (INSTANCE_LABEL, "a"),
            (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
            (SKIP_MIRROR_LABEL, "true"),
            ("team", "payments"),
        ] {
            e.metadata.labels.insert(k.to_owned(), v.to_owned());
        }
        release_labels(&mut e);
        assert_eq!(
            e.metadata.labels.keys().collect::<Vec<_>>(),
            ["team"],
            "only epcheck's labels go"
        );
        let mut helm = Endpoints::new("apps", "beta");
        helm.metadata
            .labels
            .insert(MANAGED_BY_LABEL.to_owned(), "Helm".to_owned());
        release_labels(&mut helm);
        assert_eq!(helm.metadata.labels[MANAGED_BY_LABEL], "Helm");
    }

    #[test]
    fn display_names_kind_object_and_service() {
        let mut s = EndpointSlice::new("apps", "alpha-epcheck-ipv4-0", "IPv4");
        s.metadata
            .labels
            .insert(SERVICE_NAME_LABEL.to_owned(), "alpha".to_owned());
        assert_eq!(
            Unconfigured::Slice(s).to_string(),
            "EndpointSlice apps/alpha-epcheck-ipv4-0 (Service alpha)"
        );
        let e = Endpoints::new("apps", "beta\u{1b}[2J");
        assert_eq!(
            Unconfigured::Endpoints(e).to_string(),
            "Endpoints apps/beta\\x1b[2J (Service beta\\x1b[2J)"
        );
    }
}
