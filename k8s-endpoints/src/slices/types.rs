//! Hand-written `discovery.k8s.io/v1` `EndpointSlice` wire types.
//!
//! Like the Endpoints types in [`crate::types`], they serialise to the ApiServer's JSON and YAML
//! (camelCase, absent fields left out), read `null` as an empty list or map, and keep every
//! field they do not know in `extra`, so a read-modify-write by epcheck loses nothing a newer
//! Kubernetes release added. `endpoints` is always written (an empty slice is
//! `endpoints: []`); `ports` only when not empty. They are cross-checked against
//! `k8s-openapi` in `tests/slices_openapi.rs`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::types::{Extra, ObjectMeta, ObjectReference, null_as_default};

/// `apiVersion` of EndpointSlices.
pub const ENDPOINT_SLICE_API_VERSION: &str = "discovery.k8s.io/v1";

/// `kind` of EndpointSlices.
pub const ENDPOINT_SLICE_KIND: &str = "EndpointSlice";

/// A `discovery.k8s.io/v1` `EndpointSlice`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `discovery.k8s.io/v1`; empty in list items and hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// `EndpointSlice`; empty in list items and hand-built values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Name, namespace, labels, owner references, resourceVersion and the rest.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or the deprecated `FQDN`; immutable after creation.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints, at most 1000 (epcheck writes at most 100). Always serialised.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<SliceEndpoint>,
    /// Ports served by every endpoint of the slice.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<SlicePort>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EndpointSlice {
    /// An empty slice with `apiVersion`, `kind`, namespace, name and `addressType` set.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        address_type: impl Into<String>,
    ) -> Self {
        Self {
            api_version: ENDPOINT_SLICE_API_VERSION.to_owned(),
            kind: ENDPOINT_SLICE_KIND.to_owned(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            address_type: address_type.into(),
            ..Self::default()
        }
    }

    /// The name, empty when missing.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// `namespace/name`, for messages; missing parts are shown as `?`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("?"),
            self.metadata.name.as_deref().unwrap_or("?")
        )
    }

    /// Fills in `apiVersion` and `kind` when empty (list items come without them).
    pub fn with_type_meta(mut self) -> Self {
        if self.api_version.is_empty() {
            ENDPOINT_SLICE_API_VERSION.clone_into(&mut self.api_version);
        }
        if self.kind.is_empty() {
            ENDPOINT_SLICE_KIND.clone_into(&mut self.kind);
        }
        self
    }

    /// The addresses kube-proxy would send traffic to: those of endpoints whose
    /// `conditions.ready` is true or absent (absent means ready, as the API documents), in the
    /// canonical form of an IP when they parse as one.
    pub fn ready_addresses(&self) -> impl Iterator<Item = String> + '_ {
        self.endpoints
            .iter()
            .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|ep| ep.addresses.iter())
            .map(|a| crate::render::normalize_ip(a))
    }
}

/// The list the ApiServer returns for a `GET` of the collection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceList {
    /// The slices; their `apiVersion` and `kind` are usually absent.
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<EndpointSlice>,
    /// `metadata` of the list (`resourceVersion`, `continue`), and `kind`/`apiVersion`.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One endpoint of a slice: usually one address.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceEndpoint {
    /// The addresses, of the slice's `addressType`; consumers use the first one.
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
    /// Readiness, serving and terminating state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<EndpointConditions>,
    /// Hostname of this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Node hosting this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Zone of this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Object providing the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
    /// Fields this type does not know (`hints`, `deprecatedTopology`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

impl SliceEndpoint {
    /// An endpoint with one address and explicit conditions: `ready` = `serving` = `healthy`,
    /// `terminating: false`.
    pub fn from_ip(ip: IpAddr, healthy: bool) -> Self {
        Self {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions::healthy(healthy)),
            ..Self::default()
        }
    }
}

/// The conditions of an endpoint. `None` means unknown; consumers read an unknown `ready` as
/// ready.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    /// Whether the endpoint should receive new traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Whether the endpoint is serving, whatever its terminating state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Whether the endpoint is terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
    /// Fields this type does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl EndpointConditions {
    /// What epcheck writes: `ready` = `serving` = `healthy`, `terminating: false` (an
    /// out-of-cluster backend never terminates in the Kubernetes sense).
    pub fn healthy(healthy: bool) -> Self {
        Self {
            ready: Some(healthy),
            serving: Some(healthy),
            terminating: Some(false),
            extra: Extra::new(),
        }
    }
}

/// One port of a slice. Unlike a v1 Endpoints port, `port` is optional: a port without a
/// number means "all ports".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    /// Port name; unique within the slice (empty counts as a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
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

impl From<&crate::types::EndpointPort> for SlicePort {
    /// The same port, with the protocol made explicit (`TCP` when absent, as the ApiServer
    /// defaults it).
    fn from(p: &crate::types::EndpointPort) -> Self {
        Self {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: Some(p.port),
            protocol: Some(p.protocol_or_default().to_owned()),
            app_protocol: p.app_protocol.clone(),
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_addresses_are_what_kube_proxy_routes_to() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "addressType": "IPv6",
            "endpoints": [
                {"addresses": ["2001:DB8::1"], "conditions": {"ready": true}},
                {"addresses": ["2001:db8::2"], "conditions": {"ready": false}},
                {"addresses": ["2001:db8::3"]},
                {"addresses": ["2001:db8::4"], "conditions": {}},
            ]
        }))
        .unwrap();
        let ready: Vec<String> = s.ready_addresses().collect();
        assert_eq!(ready, ["2001:db8::1", "2001:db8::3", "2001:db8::4"]);
    }

    #[test]
    fn minimal_json_always_has_endpoints() {
        let s = EndpointSlice::new("default", "redis-epcheck-ipv4-0", "IPv4");
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": "redis-epcheck-ipv4-0", "namespace": "default"},
                   "addressType": "IPv4", "endpoints": []})
        );
        assert_eq!(s.key(), "default/redis-epcheck-ipv4-0");
        assert_eq!(EndpointSlice::default().key(), "?/?");
    }

    #[test]
    fn nulls_and_unknown_fields() {
        let v = json!({"addressType": "IPv6", "endpoints": null, "ports": null,
                       "futureField": 1, "metadata": {"name": "x"}});
        let s: EndpointSlice = serde_json::from_value(v).unwrap();
        assert!(s.endpoints.is_empty() && s.ports.is_empty());
        assert_eq!(s.extra["futureField"], json!(1));
        let v = json!({"addressType": "IPv4", "metadata": {}, "endpoints": [{"addresses": ["198.51.100.1"],
            "conditions": {"ready": true, "future": "x"}, "hints": {"forZones": [{"name": "a"}]}}],
            "ports": [{"port": 80, "name": "http", "newPortField": true}]});
        let s: EndpointSlice = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), v);
        let list: EndpointSliceList =
            serde_json::from_value(json!({"kind": "EndpointSliceList", "items": null})).unwrap();
        assert!(list.items.is_empty());
    }

    #[test]
    fn type_meta_is_filled() {
        let s = EndpointSlice::default().with_type_meta();
        assert_eq!(s.api_version, ENDPOINT_SLICE_API_VERSION);
        assert_eq!(s.kind, ENDPOINT_SLICE_KIND);
    }

    #[test]
    fn ports_from_endpoints_ports() {
        let p = crate::types::EndpointPort {
            name: Some(String::new()),
            port: 6379,
            ..crate::types::EndpointPort::default()
        };
        let s = SlicePort::from(&p);
        assert_eq!(s.name, None);
        assert_eq!(s.port, Some(6379));
        assert_eq!(s.protocol.as_deref(), Some("TCP"));
    }

    #[test]
    fn endpoint_conditions() {
        let e = SliceEndpoint::from_ip("2001:db8::1".parse().unwrap(), false);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"addresses": ["2001:db8::1"],
                   "conditions": {"ready": false, "serving": false, "terminating": false}})
        );
    }
}
