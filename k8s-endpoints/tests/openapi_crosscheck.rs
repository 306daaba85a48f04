//! Cross-checks the hand-written Endpoints types against `k8s-openapi`'s (SPEC §12): the same
//! JSON and YAML go both ways, and a read-modify-write keeps every field epcheck does not own.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_endpoints::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, MANAGED_BY_LABEL, NotReadyPolicy,
    ObjectReference, Renderer, apply_to_live, codec, diff, to_json, to_yaml,
};
use k8s_openapi::api::core::v1 as openapi;
use serde_json::{Value, json};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sample() -> Endpoints {
    let mut ep = Endpoints::new("default", "redis");
    ep.metadata.labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), "epcheck".to_owned()),
        ("app".to_owned(), "redis".to_owned()),
    ]);
    ep.metadata.annotations = BTreeMap::from([("note".to_owned(), "hand-made".to_owned())]);
    ep.metadata.resource_version = Some("1234".into());
    ep.metadata.uid = Some("0b3c4b6e-2f0a-4a39-9b59-5b0c1f6f3f00".into());
    ep.metadata.creation_timestamp = Some("2026-01-02T03:04:05Z".into());
    ep.subsets = vec![
        EndpointSubset {
            addresses: vec![
                EndpointAddress::from_ip(ip("198.51.100.1")),
                EndpointAddress {
                    ip: "198.51.100.2".into(),
                    hostname: Some("node-02".into()),
                    node_name: Some("worker-2".into()),
                    target_ref: Some(ObjectReference {
                        kind: Some("Pod".into()),
                        namespace: Some("default".into()),
                        name: Some("redis-0".into()),
                        uid: Some("u-1".into()),
                        ..ObjectReference::default()
                    }),
                    ..EndpointAddress::default()
                },
            ],
            not_ready_addresses: vec![EndpointAddress::from_ip(ip("2001:db8::3"))],
            ports: vec![
                EndpointPort {
                    name: Some("redis".into()),
                    port: 6379,
                    protocol: Some("TCP".into()),
                    app_protocol: Some("redis".into()),
                    ..EndpointPort::default()
                },
                EndpointPort {
                    name: Some("sentinel".into()),
                    port: 26379,
                    protocol: Some("UDP".into()),
                    ..EndpointPort::default()
                },
            ],
            ..EndpointSubset::default()
        },
        EndpointSubset {
            addresses: vec![EndpointAddress::from_ip(ip("203.0.113.9"))],
            ports: vec![EndpointPort {
                port: 8080,
                ..EndpointPort::default()
            }],
            ..EndpointSubset::default()
        },
    ];
    ep
}

/// Field by field, so that a renamed field cannot hide behind symmetric serialisation.
fn assert_same(ours: &Endpoints, theirs: &openapi::Endpoints) {
    let m = &theirs.metadata;
    assert_eq!(m.name, ours.metadata.name);
    assert_eq!(m.namespace, ours.metadata.namespace);
    assert_eq!(m.resource_version, ours.metadata.resource_version);
    assert_eq!(m.uid, ours.metadata.uid);
    assert_eq!(m.labels.clone().unwrap_or_default(), ours.metadata.labels);
    assert_eq!(
        m.annotations.clone().unwrap_or_default(),
        ours.metadata.annotations
    );
    assert_eq!(
        m.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        ours.metadata.creation_timestamp
    );
    let subsets = theirs.subsets.clone().unwrap_or_default();
    assert_eq!(subsets.len(), ours.subsets.len());
    for (t, o) in subsets.iter().zip(&ours.subsets) {
        let addrs = |v: &Option<Vec<openapi::EndpointAddress>>| {
            v.clone()
                .unwrap_or_default()
                .into_iter()
                .map(|a| {
                    let tr = a.target_ref.map(|r| (r.kind, r.namespace, r.name, r.uid));
                    (a.ip, a.hostname, a.node_name, tr)
                })
                .collect::<Vec<_>>()
        };
        let ours_addrs = |v: &[EndpointAddress]| {
            v.iter()
                .map(|a| {
                    let tr = a
                        .target_ref
                        .clone()
                        .map(|r| (r.kind, r.namespace, r.name, r.uid));
                    (a.ip.clone(), a.hostname.clone(), a.node_name.clone(), tr)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(addrs(&t.addresses), ours_addrs(&o.addresses));
        assert_eq!(
            addrs(&t.not_ready_addresses),
            ours_addrs(&o.not_ready_addresses)
        );
        let tp: Vec<_> = t
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name, p.port, p.protocol, p.app_protocol))
            .collect();
        let op: Vec<_> = o
            .ports
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.port,
                    p.protocol.clone(),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        assert_eq!(tp, op);
    }
}

#[test]
fn json_round_trip_through_openapi() {
    let ours = sample();
    let theirs: openapi::Endpoints = serde_json::from_slice(&to_json(&ours).unwrap()).unwrap();
    assert_same(&ours, &theirs);
    // Same JSON document both ways, key for key.
    assert_eq!(
        serde_json::to_value(&theirs).unwrap(),
        serde_json::to_value(&ours).unwrap()
    );
    let back: Endpoints = codec::from_json(&serde_json::to_vec(&theirs).unwrap()).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn yaml_round_trip_through_openapi() {
    let ours = sample();
    let yaml = to_yaml(&ours).unwrap();
    let theirs: openapi::Endpoints = serde_yaml::from_str(&yaml).unwrap();
    assert_same(&ours, &theirs);
    let back: Endpoints = codec::from_yaml(&serde_yaml::to_string(&theirs).unwrap()).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn empty_subsets_round_trip() {
    let ours = Endpoints::new("default", "redis");
    let json = to_json(&ours).unwrap();
    assert!(String::from_utf8_lossy(&json).contains(r#""subsets":[]"#));
    let theirs: openapi::Endpoints = serde_json::from_slice(&json).unwrap();
    assert_eq!(theirs.subsets, Some(vec![]));
    let back: Endpoints = codec::from_json(&serde_json::to_vec(&theirs).unwrap()).unwrap();
    assert_eq!(back, ours);
    let theirs: openapi::Endpoints = serde_yaml::from_str(&to_yaml(&ours).unwrap()).unwrap();
    assert_same(&ours, &theirs);
}

fn live_json() -> Value {
    json!({
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {
            "name": "redis",
            "namespace": "default",
            "uid": "6f1d2c3b-8a9e-4c1f-9d2e-1a2b3c4d5e6f",
            "resourceVersion": "918273",
            "creationTimestamp": "2025-11-20T08:15:30Z",
            "labels": {"app": "redis", "team": "storage"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\"}\n",
                "endpointslice.kubernetes.io/skip-mirror": "false"
            },
            "finalizers": ["example.com/keep"],
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2025-11-20T08:15:30Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:subsets": {}}
            }],
            "someFutureMetaField": {"x": [1, 2, 3]}
        },
        "subsets": [{
            "addresses": [
                {"ip": "198.51.100.1", "hostname": "redis-a", "nodeName": "worker-1",
                 "targetRef": {"kind": "Pod", "namespace": "default", "name": "redis-0",
                               "uid": "aa", "resourceVersion": "7"}},
                {"ip": "198.51.100.2"}
            ],
            "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]
        }],
        "someFutureTopLevelField": true
    })
}

fn without_subsets(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("subsets");
    }
    v
}

#[test]
fn read_modify_write_keeps_everything_else() {
    let live_value = live_json();
    // The live object is valid for k8s-openapi too.
    let _: openapi::Endpoints = serde_json::from_value(live_value.clone()).unwrap();
    let live: Endpoints = codec::from_json(&serde_json::to_vec(&live_value).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&live).unwrap(),
        live_value,
        "lossless parse"
    );

    let template: Endpoints = codec::from_yaml(SEED_TEMPLATE).unwrap();
    let renderer =
        Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let desired = renderer.render(
        &[ip("198.51.100.1"), ip("198.51.100.3")],
        &[ip("198.51.100.2")],
        Some(&live),
    );
    let d = diff(&live, &desired);
    assert_eq!(
        d.to_string(),
        "+198.51.100.3 -198.51.100.2 +198.51.100.2(not ready) label app.kubernetes.io/managed-by missing"
    );
    let body = apply_to_live(&live, &desired);
    assert!(diff(&body, &desired).is_empty());

    // Everything but subsets is unchanged, except the one label epcheck adds.
    let mut expected = without_subsets(live_value.clone());
    expected["metadata"]["labels"][MANAGED_BY_LABEL] = json!("epcheck");
    let body_value = serde_json::to_value(&body).unwrap();
    assert_eq!(without_subsets(body_value.clone()), expected);

    // The subset: live ports kept, address details of a known IP kept.
    assert_eq!(
        body_value["subsets"],
        json!([{
            "addresses": [
                {"ip": "198.51.100.1", "hostname": "redis-a", "nodeName": "worker-1",
                 "targetRef": {"kind": "Pod", "namespace": "default", "name": "redis-0",
                               "uid": "aa", "resourceVersion": "7"}},
                {"ip": "198.51.100.3"}
            ],
            "notReadyAddresses": [{"ip": "198.51.100.2"}],
            "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]
        }])
    );

    // A second pass over the written object is a no-op and changes nothing at all.
    let again = apply_to_live(
        &body,
        &renderer.render(
            &[ip("198.51.100.1"), ip("198.51.100.3")],
            &[ip("198.51.100.2")],
            Some(&body),
        ),
    );
    assert_eq!(again, body);
    // The written body is valid for k8s-openapi in both formats.
    let _: openapi::Endpoints = serde_json::from_slice(&to_json(&body).unwrap()).unwrap();
    let _: openapi::Endpoints = serde_yaml::from_str(&to_yaml(&body).unwrap()).unwrap();
}

/// The `endpoint_template` block of `shared/reference/seed-config.yaml`, verbatim.
const SEED_TEMPLATE: &str = "\
kind: Endpoints
apiVersion: v1
metadata:
  name: ceph
  namespace: default
subsets:
  - addresses:
      - ip: 10.0.0.71
      - ip: 10.0.0.72
    ports:
      - port: 8080
        protocol: TCP
";

#[test]
fn seed_template_parses() {
    let t: Endpoints = codec::from_yaml(SEED_TEMPLATE).unwrap();
    assert_eq!(
        (t.kind.as_str(), t.api_version.as_str()),
        ("Endpoints", "v1")
    );
    assert_eq!(t.key(), "default/ceph");
    assert_eq!(t.subsets.len(), 1);
    let ips: Vec<_> = t.subsets[0]
        .addresses
        .iter()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(ips, ["10.0.0.71", "10.0.0.72"]);
    assert_eq!(t.subsets[0].ports[0].port, 8080);
    assert_eq!(t.subsets[0].ports[0].protocol.as_deref(), Some("TCP"));
    let theirs: openapi::Endpoints = serde_yaml::from_str(SEED_TEMPLATE).unwrap();
    assert_same(&t, &theirs);

    let r = Renderer::new(&t, "default", "ceph", None, NotReadyPolicy::Drop).unwrap();
    let out = r.render(&[ip("198.51.100.7")], &[ip("198.51.100.8")], None);
    let yaml = to_yaml(&out).unwrap();
    assert_eq!(
        yaml,
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: ceph\n  namespace: default\n  labels:\n    \
         app.kubernetes.io/managed-by: epcheck\nsubsets:\n- addresses:\n  - ip: 198.51.100.7\n  ports:\n  \
         - port: 8080\n    protocol: TCP\n"
    );
}
