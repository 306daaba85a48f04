//! The little epcheck needs to know about a Service: whether it has a selector (then the
//! endpoints controller owns its Endpoints and epcheck must not write them, SPEC §5.3), its
//! uid (the owner of epcheck's EndpointSlices) and its ports (kube-proxy routes a Service port
//! to the endpoint port of the same name, SPEC §9).
//!
//! Only a handful of fields are decoded; everything else in the Service is ignored.

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;

use super::Client;
use super::object_ref::ObjectRef;
use super::request::{Action, Request};
use crate::error::Error;
use crate::path::{check_name, check_namespace};

/// What epcheck reads of a `v1` Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.selector`; empty for a selector-less Service (the kind epcheck serves).
    pub selector: BTreeMap<String, String>,
    /// `spec.type` (`ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`), if set.
    pub service_type: Option<String>,
    /// `spec.clusterIP`, if set (`None` for headless is `Some("None")`).
    pub cluster_ip: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.uid`: what the owner reference of epcheck's EndpointSlices names.
    pub uid: Option<String>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service, the fields that decide which endpoint port it routes to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port's name; empty or absent for the one port of a single-port Service.
    #[serde(default)]
    pub name: Option<String>,
    /// The Service's port number.
    #[serde(default)]
    pub port: i32,
    /// `TCP` when absent.
    #[serde(default)]
    pub protocol: Option<String>,
}

impl ServiceInfo {
    /// Whether the Service has a selector, so that its Endpoints belong to the endpoints
    /// controller.
    pub fn has_selector(&self) -> bool {
        !self.selector.is_empty()
    }

    /// The selector as `k=v,k2=v2`, control characters escaped
    /// ([`escape_control`](super::escape_control)): it is quoted in errors.
    pub fn selector_text(&self) -> String {
        let text = self
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        super::error::escaped(&text)
    }

    /// The names of `ports` (endpoint ports: the template's, or a service's `ports`) that
    /// match no port of this Service. kube-proxy sends the traffic of a Service port to the
    /// endpoint port of the same name (both empty for a single unnamed port), so such a port
    /// routes nothing. Unnamed ports are listed as `""`; names are escaped for messages.
    pub fn unmatched_ports(&self, ports: &[crate::types::EndpointPort]) -> Vec<String> {
        ports
            .iter()
            .map(|p| p.name.clone().unwrap_or_default())
            .filter(|name| {
                !self
                    .ports
                    .iter()
                    .any(|sp| sp.name.as_deref().unwrap_or_default() == name)
            })
            .map(|name| super::error::escaped(&name))
            .collect()
    }

    /// The Service's port names, for messages: `http, metrics`, `(unnamed)` for a port without
    /// a name, `(none)` when it has no port; escaped.
    pub fn port_names(&self) -> String {
        if self.ports.is_empty() {
            return "(none)".to_owned();
        }
        let names: Vec<&str> = self
            .ports
            .iter()
            .map(|p| match p.name.as_deref() {
                None | Some("") => "(unnamed)",
                Some(n) => n,
            })
            .collect();
        super::error::escaped(&names.join(", "))
    }

    /// Decodes a Service from JSON (what the ApiServer returns). Never panics.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the body is not a Service.
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        Self::with_kind(body).map(|(_, svc)| svc)
    }

    /// [`from_json`](Self::from_json), with the body's `kind`.
    fn with_kind(body: &[u8]) -> Result<(String, Self), Error> {
        let wire: ServiceWire = crate::codec::from_json(body)?;
        let meta = wire.metadata.unwrap_or_default();
        let kind = wire.kind.unwrap_or_default();
        let svc = Self {
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            selector: wire
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default(),
            service_type: wire.spec.as_ref().and_then(|s| s.service_type.clone()),
            cluster_ip: wire.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
            resource_version: meta.resource_version,
            uid: meta.uid,
            ports: wire.spec.and_then(|s| s.ports).unwrap_or_default(),
        };
        Ok((kind, svc))
    }
}

#[derive(Deserialize)]
struct ServiceWire {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<MetaWire>,
    #[serde(default)]
    spec: Option<SpecWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct MetaWire {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecWire {
    #[serde(default)]
    selector: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "type")]
    service_type: Option<String>,
    #[serde(default, rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default)]
    ports: Option<Vec<ServicePort>>,
}

impl Client {
    /// Reads a Service; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::Api`] for any
    /// answer but `200` and `404` (a `403` says that epcheck needs `get` on `services`);
    /// [`Error::Transport`]; [`Error::InvalidResponse`] when the body is not a Service;
    /// [`Error::UnexpectedObject`] when it is another one.
    pub async fn get_service(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceInfo>, Error> {
        check_namespace(namespace)?;
        check_name(name)?;
        let req = Request {
            method: Method::GET,
            path: format!(
                "{}/api/v1/namespaces/{namespace}/services/{name}",
                self.inner.api_prefix
            ),
            body: None,
            action: Action {
                verb: "get",
                resource: "services",
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
            },
        };
        let resp = match self.execute(&req).await {
            Ok(resp) => resp,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = |problem: String| Error::InvalidResponse {
            method: "GET".to_owned(),
            url: self.inner.base.join(&req.path),
            problem: super::error::escaped(&problem),
        };
        let (kind, svc) = ServiceInfo::with_kind(&resp.body).map_err(|e| invalid(e.to_string()))?;
        ObjectRef::new("Service", namespace, name).check_names(
            self,
            &req,
            Some(&kind),
            Some(&svc.namespace),
            Some(&svc.name),
        )?;
        Ok(Some(svc))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn selector_less_and_selector() {
        let s = ServiceInfo::from_json(
            br#"{"kind":"Service","metadata":{"name":"redis","namespace":"default","resourceVersion":"9"},
                "spec":{"ports":[{"port":6379}],"clusterIP":"10.96.0.10","type":"ClusterIP"}}"#,
        )
        .unwrap();
        assert!(!s.has_selector());
        assert_eq!(s.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(s.resource_version.as_deref(), Some("9"));
        assert_eq!(s.uid, None);
        let s = ServiceInfo::from_json(
            br#"{"metadata":{"name":"web","uid":"6f1c"},"spec":{"selector":{"app":"web","tier":"fe"}}}"#,
        )
        .unwrap();
        assert!(s.has_selector());
        assert_eq!(s.uid.as_deref(), Some("6f1c"));
        assert_eq!(s.selector_text(), "app=web,tier=fe");
        let s = ServiceInfo::from_json(br#"{"spec":{"selector":null}}"#).unwrap();
        assert!(!s.has_selector());
        let s = ServiceInfo::from_json(br#"{"spec":null,"metadata":null}"#).unwrap();
        assert!(!s.has_selector());
    }

    #[test]
    fn ports_are_matched_by_name() {
        use crate::types::EndpointPort;
        let port = |name: Option<&str>| EndpointPort {
            name: name.map(str::to_owned),
            port: 8080,
            ..EndpointPort::default()
        };
        let s = ServiceInfo::from_json(
            br#"{"kind":"Service","metadata":{"name":"web","namespace":"default"},
                "spec":{"ports":[{"name":"http","port":80,"protocol":"TCP"},{"name":"metrics","port":9100}]}}"#,
        )
        .unwrap();
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.port_names(), "http, metrics");
        assert!(s.unmatched_ports(&[port(Some("http"))]).is_empty());
        assert_eq!(
            s.unmatched_ports(&[port(Some("http")), port(Some("web"))]),
            ["web"]
        );
        assert_eq!(s.unmatched_ports(&[port(None)]), [""]);
        // A single unnamed port on both sides matches (kube-proxy's "" name).
        let single = ServiceInfo::from_json(br#"{"spec":{"ports":[{"port":80}]}}"#).unwrap();
        assert!(single.unmatched_ports(&[port(None)]).is_empty());
        assert_eq!(single.port_names(), "(unnamed)");
        assert_eq!(ServiceInfo::default().port_names(), "(none)");
        // Names quoted back from the ApiServer are escaped.
        let odd = ServiceInfo::from_json(br#"{"spec":{"ports":[{"name":"a\u001b[2J","port":1}]}}"#)
            .unwrap();
        assert_eq!(odd.port_names(), r"a\x1b[2J");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ServiceInfo::from_json(b"<html>").is_err());
        assert!(ServiceInfo::from_json(br#"{"spec":{"selector":[1]}}"#).is_err());
    }
}
