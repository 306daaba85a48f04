//! `coordination.k8s.io/v1` Leases: the hand-written type and get / create / update, the
//! ApiServer side of leader election (SPEC §9).
//!
//! Least privilege (SPEC §10) grants `get`, `update` and a *name-restricted* `create` on the
//! one Lease, so a Lease is created with a `PUT` to its own URL without a `resourceVersion`
//! (the Lease registry allows create-on-update, and that `PUT` is authorised as a `create` of
//! that name), never with a `POST` to the collection. An update must carry the
//! `resourceVersion` that was read: Leases allow no unconditional update, so a competing
//! writer gets `409 Conflict`.

use http::Method;
use serde::{Deserialize, Serialize};

use super::Client;
use super::error::ApiErrorKind;
use super::object_ref::ObjectRef;
use super::request::{Action, Request};
use crate::election::MicroTime;
use crate::error::Error;
use crate::path::{check_name, check_namespace};
use crate::types::{Extra, ObjectMeta, null_as_default};

/// `apiVersion` of a Lease.
pub const LEASE_API_VERSION: &str = "coordination.k8s.io/v1";

/// `kind` of a Lease.
pub const LEASE_KIND: &str = "Lease";

/// A `coordination.k8s.io/v1` Lease. Unknown fields are kept, in the object and in its spec
/// (`strategy`, `preferredHolder`), so that a read-modify-write loses nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `coordination.k8s.io/v1`; empty only in hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `Lease`; empty only in hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name, namespace, resourceVersion and the rest.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: ObjectMeta,
    /// The holder and its times.
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: LeaseSpec,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `LeaseSpec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// Who holds the lease; empty or absent when nobody does (e.g. after a release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long candidates wait, on their own clock, after last seeing the lease change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i32>,
    /// When the current holder acquired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<MicroTime>,
    /// When the current holder last renewed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<MicroTime>,
    /// How many times the lease changed holders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Lease {
    /// An empty Lease with `apiVersion`, `kind`, namespace and name set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            api_version: LEASE_API_VERSION.to_owned(),
            kind: LEASE_KIND.to_owned(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            ..Self::default()
        }
    }

    /// `namespace/name`, for messages; missing parts are shown as `?`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("?"),
            self.metadata.name.as_deref().unwrap_or("?")
        )
    }
}

impl Client {
    /// The path of one Lease, under the same prefix as the Endpoints template.
    fn lease_path(&self, namespace: &str, name: &str) -> Result<String, Error> {
        check_namespace(namespace)?;
        check_name(name)?;
        Ok(format!(
            "{}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}",
            self.inner.api_prefix
        ))
    }

    /// Reads a Lease; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::Api`] for any
    /// answer but `200` and `404`; [`Error::Transport`]; [`Error::InvalidResponse`] when the
    /// body is not a Lease; [`Error::UnexpectedObject`] when it is another one.
    pub async fn get_lease(&self, namespace: &str, name: &str) -> Result<Option<Lease>, Error> {
        let req = Request {
            method: Method::GET,
            path: self.lease_path(namespace, name)?,
            body: None,
            action: action("get", namespace, name),
        };
        match self.execute(&req).await {
            Ok(resp) => self
                .decode_checked(&req, &resp, ObjectRef::new(LEASE_KIND, namespace, name))
                .map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(lease_hint(e)),
        }
    }

    /// Creates the Lease `namespace/name` with a `PUT` to its own URL (made from these two
    /// values only) and no `resourceVersion` (server metadata in `lease` is dropped first).
    /// When the Lease appeared in the meantime the ApiServer refuses the `PUT` (`422`: an
    /// update needs a `resourceVersion`), so a competitor's Lease is never overwritten; that
    /// refusal is [`Error::is_lost_race`].
    ///
    /// # Errors
    ///
    /// As [`get_lease`](Self::get_lease); `404` is an error here;
    /// [`Error::InvalidObjectName`] when `lease` names another object (nothing is sent).
    pub async fn create_lease(
        &self,
        namespace: &str,
        name: &str,
        lease: &Lease,
    ) -> Result<Lease, Error> {
        ObjectRef::new(LEASE_KIND, namespace, name).check_body(&lease.metadata)?;
        let mut body = lease.clone();
        body.metadata.namespace = Some(namespace.to_owned());
        body.metadata.name = Some(name.to_owned());
        body.metadata.resource_version = None;
        body.metadata.uid = None;
        body.metadata.creation_timestamp = None;
        let req = Request {
            method: Method::PUT,
            path: self.lease_path(namespace, name)?,
            body: Some(crate::codec::encode(&body, self.inner.content_type)?),
            action: action("create", namespace, name),
        };
        let resp = self.execute(&req).await.map_err(lease_hint)?;
        self.decode_checked(&req, &resp, ObjectRef::new(LEASE_KIND, namespace, name))
    }

    /// Replaces the Lease `namespace/name` with a `PUT` to its URL (made from these two values
    /// only) carrying `lease`'s `metadata.resourceVersion`; the ApiServer answers `409
    /// Conflict` when someone else wrote it since it was read.
    ///
    /// # Errors
    ///
    /// As [`create_lease`](Self::create_lease); [`Error::InvalidObjectName`] when `lease` has
    /// no `resourceVersion` (the ApiServer would refuse it).
    pub async fn update_lease(
        &self,
        namespace: &str,
        name: &str,
        lease: &Lease,
    ) -> Result<Lease, Error> {
        let target = ObjectRef::new(LEASE_KIND, namespace, name);
        target.check_body(&lease.metadata)?;
        if lease
            .metadata
            .resource_version
            .as_deref()
            .is_none_or(str::is_empty)
        {
            return Err(Error::InvalidObjectName {
                what: "Lease resourceVersion",
                value: String::new(),
                problem: format!(
                    "updating Lease {namespace}/{name} needs the resourceVersion that was read"
                ),
            });
        }
        let req = Request {
            method: Method::PUT,
            path: self.lease_path(namespace, name)?,
            body: Some(crate::codec::encode(lease, self.inner.content_type)?),
            action: action("update", namespace, name),
        };
        let resp = self.execute(&req).await.map_err(lease_hint)?;
        self.decode_checked(&req, &resp, ObjectRef::new(LEASE_KIND, namespace, name))
    }
}

/// `LeaseList`: only the items are kept.
#[derive(Debug, Deserialize)]
struct LeaseList {
    #[serde(default)]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    items: Vec<Lease>,
}

impl Client {
    /// Lists the Leases of `namespace` that carry the label `key=value` (a `GET` of the
    /// collection with a label selector). Every item must be a Lease of `namespace` with that
    /// label; anything else in the reply is an error, not skipped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace; [`Error::Api`] for any answer but
    /// `200` (a `403` says that epcheck needs `list` on leases); [`Error::Transport`];
    /// [`Error::InvalidResponse`]; [`Error::UnexpectedObject`].
    pub async fn list_leases(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Lease>, Error> {
        check_namespace(namespace)?;
        let selector = super::slices::encode_query(&format!("{key}={value}"));
        let req = Request {
            method: Method::GET,
            path: format!(
                "{}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases?labelSelector={selector}",
                self.inner.api_prefix
            ),
            body: None,
            action: Action {
                verb: "list",
                resource: "leases",
                namespace: Some(namespace.to_owned()),
                name: None,
            },
        };
        let resp = self.execute(&req).await.map_err(lease_hint)?;
        let list: LeaseList = self.decode(&req, &resp)?;
        let asked = || format!("the Leases in namespace {namespace} labelled {key}={value}");
        if list.kind != "LeaseList" {
            let got = format!(
                "a {} instead of a LeaseList",
                super::slices::or_unknown(&list.kind)
            );
            return Err(super::object_ref::unexpected(self, &req, asked(), got));
        }
        for item in &list.items {
            let meta = &item.metadata;
            let ok = (item.kind.is_empty() || item.kind == LEASE_KIND)
                && meta.namespace.as_deref() == Some(namespace)
                && meta.labels.get(key).map(String::as_str) == Some(value);
            if !ok {
                let got = format!("Lease {} with labels {:?}", item.key(), meta.labels);
                return Err(super::object_ref::unexpected(self, &req, asked(), got));
            }
        }
        Ok(list.items)
    }

    /// Deletes the Lease `namespace/name` if it is still at `resource_version` (a `DELETE`
    /// with that precondition, so a Lease renewed meanwhile stays); `Ok(false)` when it was
    /// already gone.
    ///
    /// # Errors
    ///
    /// As [`get_lease`](Self::get_lease); a `409` when it changed since `resource_version`.
    pub async fn delete_lease(
        &self,
        namespace: &str,
        name: &str,
        resource_version: Option<&str>,
    ) -> Result<bool, Error> {
        let mut preconditions = serde_json::Map::new();
        if let Some(rv) = resource_version {
            preconditions.insert("resourceVersion".into(), serde_json::json!(rv));
        }
        let options = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1",
                                         "preconditions": preconditions});
        let req = Request {
            method: Method::DELETE,
            path: self.lease_path(namespace, name)?,
            body: Some(crate::codec::encode(&options, self.inner.content_type)?),
            action: action("delete", namespace, name),
        };
        match self.execute(&req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(lease_hint(e)),
        }
    }
}

fn action(verb: &'static str, namespace: &str, name: &str) -> Action {
    Action {
        verb,
        resource: "leases",
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
    }
}

/// Replaces the Endpoints-specific hints of a `403`, `400` and `422` with the Lease ones:
/// nothing about endpoint templates or target IPs concerns a Lease.
fn lease_hint(mut err: Error) -> Error {
    let race = err.is_lost_race();
    if let Error::Api(api) = &mut err {
        match api.kind() {
            ApiErrorKind::Forbidden => {
                api.hint = "leader election needs, in the Lease's namespace, a Role with get, update and create on leases.coordination.k8s.io, restricted by resourceNames to the Lease's name, bound to epcheck's service account; consensus.enabled also needs list, create, update and delete on leases there, unrestricted by name, for the replicas' views (`epcheck manifests` prints both)".to_owned();
            }
            _ if race => {
                api.hint = "another replica created the Lease first; it is read again and the election goes on".to_owned();
            }
            ApiErrorKind::Invalid | ApiErrorKind::BadRequest => {
                api.hint = "the ApiServer refused the Lease; check leader_election (name, namespace, lease_duration)".to_owned();
            }
            _ => {}
        }
    }
    err
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::codec;

    #[test]
    fn round_trips_and_keeps_unknown_fields() {
        let body = br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease",
            "metadata":{"name":"epcheck","namespace":"default","resourceVersion":"7"},
            "spec":{"holderIdentity":"pod-a_1f2e3d","leaseDurationSeconds":15,
                    "acquireTime":"2026-01-02T03:04:05.123456Z","renewTime":"2026-01-02T03:04:07.5Z",
                    "leaseTransitions":3,"strategy":"OldestEmulationVersion","preferredHolder":"x"},
            "status":{"future":true}}"#;
        let lease: Lease = codec::from_json(body).unwrap();
        assert_eq!(lease.spec.holder_identity.as_deref(), Some("pod-a_1f2e3d"));
        assert_eq!(lease.spec.lease_transitions, Some(3));
        assert_eq!(
            lease.spec.renew_time.unwrap().to_string(),
            "2026-01-02T03:04:07.500000Z"
        );
        let back: serde_json::Value =
            serde_json::from_slice(&codec::to_json(&lease).unwrap()).unwrap();
        assert_eq!(back["spec"]["preferredHolder"], "x");
        assert_eq!(back["spec"]["strategy"], "OldestEmulationVersion");
        assert_eq!(back["status"]["future"], true);
        assert_eq!(back["spec"]["renewTime"], "2026-01-02T03:04:07.500000Z");
        assert_eq!(back["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn empty_holder_is_written_and_nulls_are_read() {
        let mut lease = Lease::new("ns", "l");
        lease.spec.holder_identity = Some(String::new());
        lease.spec.lease_duration_seconds = Some(1);
        let v: serde_json::Value =
            serde_json::from_slice(&codec::to_json(&lease).unwrap()).unwrap();
        assert_eq!(v["spec"]["holderIdentity"], "");
        assert_eq!(v["kind"], "Lease");
        let l: Lease = codec::from_json(br#"{"metadata":null,"spec":null}"#).unwrap();
        assert_eq!(l.spec, LeaseSpec::default());
        let l: Lease = codec::from_json(br#"{"spec":{"holderIdentity":null}}"#).unwrap();
        assert_eq!(l.spec.holder_identity, None);
    }

    #[test]
    fn bad_bodies_are_errors() {
        for body in [
            &br#"{"spec":{"renewTime":"yesterday"}}"#[..],
            br#"{"spec":{"leaseDurationSeconds":99999999999}}"#,
            br#"{"spec":[]}"#,
            b"<html>",
        ] {
            assert!(codec::from_json::<Lease>(body).is_err());
        }
    }

    #[test]
    fn keys() {
        let mut lease = Lease::new("default", "epcheck");
        assert_eq!(lease.key(), "default/epcheck");
        lease.metadata.name = None;
        assert_eq!(lease.key(), "default/?");
    }
}
