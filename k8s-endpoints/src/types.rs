//! Hand-written wire types: `v1` `Endpoints` and the `Status` object of error responses.
//!
//! They serialise to the same JSON and YAML as the ApiServer's (camelCase, empty and absent
//! fields left out) and are cross-checked against `k8s-openapi` in `tests/openapi_crosscheck.rs`.
//!
//! A read-modify-write must not lose what epcheck does not own, so every object type keeps the
//! fields it does not know in `extra` (`#[serde(flatten)]`), and `managedFields` is kept as raw
//! JSON. A field added to Endpoints by a future Kubernetes release survives a `PUT` by epcheck.
//!
//! `null` is accepted wherever a list or map is expected and read as empty, as the Go client
//! does. `subsets` is the one list always written, so that "no backend at all" is an explicit
//! `subsets: []` in the body.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Unknown fields of an object, kept for the next write.
pub type Extra = serde_json::Map<String, Value>;

/// `apiVersion` of Endpoints.
pub const ENDPOINTS_API_VERSION: &str = "v1";

/// `kind` of Endpoints.
pub const ENDPOINTS_KIND: &str = "Endpoints";

/// A `v1` `Endpoints` object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `v1`; empty only in hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `Endpoints`; empty only in hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name, namespace, labels, resourceVersion and the rest.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The address sets. Always serialised, so an empty list is written as `subsets: []`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subsets: Vec<EndpointSubset>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Endpoints {
    /// An empty object with `apiVersion`, `kind`, namespace and name set.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            api_version: ENDPOINTS_API_VERSION.to_owned(),
            kind: ENDPOINTS_KIND.to_owned(),
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

/// Standard object metadata (`metav1.ObjectMeta`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix for a server-generated name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Server-assigned unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version for optimistic concurrency; sent back on `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Sequence number of the desired state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339 creation time, kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// RFC 3339 deletion time, kept as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Grace period of a pending deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Labels.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Owners of this object.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub owner_references: Vec<OwnerReference>,
    /// Finalizers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub finalizers: Vec<String>,
    /// Server-side-apply bookkeeping, kept verbatim.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub managed_fields: Vec<Value>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A reference to an owning object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// API version of the owner.
    #[serde(default)]
    pub api_version: String,
    /// Kind of the owner.
    #[serde(default)]
    pub kind: String,
    /// Name of the owner.
    #[serde(default)]
    pub name: String,
    /// UID of the owner.
    #[serde(default)]
    pub uid: String,
    /// Whether the owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Whether the owner's deletion waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A group of addresses that share the same ports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSubset {
    /// Ready addresses.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub addresses: Vec<EndpointAddress>,
    /// Addresses that are known but not ready; kube-proxy does not send traffic to them.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// Ports served on every address of this subset.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<EndpointPort>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One backend address.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAddress {
    /// The IP, in text form.
    #[serde(default)]
    pub ip: String,
    /// Hostname of this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Node hosting this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Object providing the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EndpointAddress {
    /// An address with only its IP set.
    pub fn from_ip(ip: std::net::IpAddr) -> Self {
        Self {
            ip: ip.to_string(),
            ..Self::default()
        }
    }
}

/// A reference to another object (`targetRef`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// API version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// UID of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Resource version of the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// A field inside the referent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One serving port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// Port name; required when a subset has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number, 1..=65535.
    pub port: i32,
    /// `TCP` (the default when absent), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Application protocol, e.g. `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EndpointPort {
    /// An unnamed TCP port.
    pub fn tcp(port: u16) -> Self {
        EndpointPort {
            port: i32::from(port),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }
    }

    /// The protocol, `TCP` when absent (the ApiServer's default).
    pub fn protocol_or_default(&self) -> &str {
        self.protocol.as_deref().unwrap_or("TCP")
    }
}

/// The `Status` object the ApiServer returns with an error (`kind: Status`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `v1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `Status`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Machine-readable reason: `NotFound`, `Conflict`, `AlreadyExists`, `Invalid`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extra data about the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Fields this type does not know (`metadata`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Status {
    /// Whether `reason` equals `reason`.
    pub fn has_reason(&self, reason: &str) -> bool {
        self.reason.as_deref() == Some(reason)
    }
}

impl fmt::Display for Status {
    /// `409 Conflict: Operation cannot be fulfilled …`, leaving out missing parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(code) = self.code {
            parts.push(code.to_string());
        }
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            parts.push(reason.to_owned());
        }
        let head = parts.join(" ");
        match (head.is_empty(), self.message.as_deref()) {
            (true, None) => f.write_str("(empty Status)"),
            (true, Some(msg)) => f.write_str(msg),
            (false, None) => f.write_str(&head),
            (false, Some(msg)) => write!(f, "{head}: {msg}"),
        }
    }
}

/// `details` of a [`Status`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    /// Name of the object concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// API group of the object concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (resource) of the object concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// UID of the object concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Individual problems, e.g. one per invalid field.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub causes: Vec<StatusCause>,
    /// Seconds to wait before retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<i32>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One cause in [`StatusDetails`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    /// Machine-readable cause, e.g. `FieldValueInvalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The field concerned, e.g. `subsets[0].addresses[0].ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Reads `null` as the type's default (an empty list or map), as Go's JSON decoding does. Shared
/// by every wire type of the crate (Endpoints, EndpointSlices, Leases).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_json() {
        let ep = Endpoints::new("default", "redis");
        let v = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Endpoints",
                   "metadata": {"name": "redis", "namespace": "default"}, "subsets": []})
        );
        assert_eq!(ep.key(), "default/redis");
        assert_eq!(Endpoints::default().key(), "?/?");
    }

    #[test]
    fn nulls_read_as_empty() {
        let v = json!({"metadata": {"labels": null, "managedFields": null},
                       "subsets": [{"addresses": null, "ports": null}]});
        let ep: Endpoints = serde_json::from_value(v).unwrap();
        assert!(ep.metadata.labels.is_empty());
        assert_eq!(ep.subsets, vec![EndpointSubset::default()]);
        let ep: Endpoints = serde_json::from_value(json!({"subsets": null})).unwrap();
        assert!(ep.subsets.is_empty());
    }

    #[test]
    fn unknown_fields_survive() {
        let v = json!({"apiVersion": "v1", "kind": "Endpoints", "futureTopLevel": {"a": 1},
            "metadata": {"name": "x", "selfLink": "/x", "newMeta": [1, 2]},
            "subsets": [{"addresses": [{"ip": "198.51.100.1", "zone": "z1"}],
                         "ports": [{"port": 80, "futurePortField": true}], "subsetExtra": 1}]});
        let ep: Endpoints = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(ep.extra["futureTopLevel"], json!({"a": 1}));
        assert_eq!(ep.metadata.extra["selfLink"], json!("/x"));
        assert_eq!(serde_json::to_value(&ep).unwrap(), v);
    }

    #[test]
    fn port_protocol_default() {
        let p = EndpointPort {
            port: 80,
            ..EndpointPort::default()
        };
        assert_eq!(p.protocol_or_default(), "TCP");
    }

    #[test]
    fn status_parses_and_displays() {
        let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "endpoints \"redis\" not found", "reason": "NotFound",
            "details": {"name": "redis", "kind": "endpoints",
                        "causes": [{"reason": "FieldValueInvalid", "message": "m", "field": "f"}],
                        "retryAfterSeconds": 3},
            "code": 404});
        let st: Status = serde_json::from_value(v.clone()).unwrap();
        assert!(st.has_reason("NotFound"));
        assert_eq!(st.details.as_ref().unwrap().retry_after_seconds, Some(3));
        assert_eq!(
            st.to_string(),
            "404 NotFound: endpoints \"redis\" not found"
        );
        assert_eq!(serde_json::to_value(&st).unwrap(), v);
        assert_eq!(Status::default().to_string(), "(empty Status)");
        let only_code = Status {
            code: Some(500),
            ..Status::default()
        };
        assert_eq!(only_code.to_string(), "500");
    }
}
