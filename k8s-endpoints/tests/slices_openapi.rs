//! Cross-checks the hand-written EndpointSlice types against `k8s-openapi`'s
//! (`discovery.k8s.io/v1`): the same JSON and YAML go both ways, field by field, and fields the
//! hand-written types do not model (`hints`, `deprecatedTopology`) survive a round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_endpoints::slices::{
    EndpointConditions, EndpointSlice, EndpointSliceList, SliceEndpoint, SlicePort, SliceRenderer,
    service_owner_reference,
};
use k8s_endpoints::{EndpointPort, NotReadyPolicy, ObjectReference, codec, to_json, to_yaml};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::{Value, json};

fn sample() -> EndpointSlice {
    let mut s = EndpointSlice::new("default", "redis-epcheck-ipv4-0", "IPv4");
    s.metadata.labels = BTreeMap::from([
        ("kubernetes.io/service-name".to_owned(), "redis".to_owned()),
        (
            "endpointslice.kubernetes.io/managed-by".to_owned(),
            "epcheck.io".to_owned(),
        ),
    ]);
    s.metadata.owner_references = vec![service_owner_reference("redis", "0b3c-uid")];
    s.metadata.resource_version = Some("812".into());
    s.metadata.generation = Some(3);
    s.endpoints = vec![
        SliceEndpoint::from_ip("198.51.100.1".parse().unwrap(), true),
        SliceEndpoint {
            addresses: vec!["198.51.100.2".into()],
            conditions: Some(EndpointConditions {
                ready: Some(false),
                serving: None,
                terminating: Some(false),
                ..EndpointConditions::default()
            }),
            hostname: Some("node-02".into()),
            node_name: Some("worker-2".into()),
            zone: Some("zone-a".into()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some("redis-0".into()),
                ..ObjectReference::default()
            }),
            ..SliceEndpoint::default()
        },
    ];
    s.ports = vec![
        SlicePort {
            name: Some("redis".into()),
            port: Some(6379),
            protocol: Some("TCP".into()),
            app_protocol: Some("redis".into()),
            ..SlicePort::default()
        },
        SlicePort {
            name: Some("all".into()),
            protocol: Some("UDP".into()),
            ..SlicePort::default()
        },
    ];
    s
}

/// Field by field, so that a renamed field cannot hide behind symmetric serialisation.
fn assert_same(ours: &EndpointSlice, theirs: &discovery::EndpointSlice) {
    let m = &theirs.metadata;
    assert_eq!(m.name, ours.metadata.name);
    assert_eq!(m.namespace, ours.metadata.namespace);
    assert_eq!(m.resource_version, ours.metadata.resource_version);
    assert_eq!(m.generation, ours.metadata.generation);
    assert_eq!(m.labels.clone().unwrap_or_default(), ours.metadata.labels);
    let owners = m.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), ours.metadata.owner_references.len());
    for (t, o) in owners.iter().zip(&ours.metadata.owner_references) {
        assert_eq!(
            (&t.api_version, &t.kind, &t.name, &t.uid),
            (&o.api_version, &o.kind, &o.name, &o.uid)
        );
        assert_eq!(t.controller, o.controller);
        assert_eq!(t.block_owner_deletion, o.block_owner_deletion);
    }
    assert_eq!(theirs.address_type, ours.address_type);
    assert_eq!(theirs.endpoints.len(), ours.endpoints.len());
    for (t, o) in theirs.endpoints.iter().zip(&ours.endpoints) {
        assert_eq!(t.addresses, o.addresses);
        let (tc, oc) = (
            t.conditions.clone().unwrap_or_default(),
            o.conditions.clone().unwrap_or_default(),
        );
        assert_eq!(
            (tc.ready, tc.serving, tc.terminating),
            (oc.ready, oc.serving, oc.terminating)
        );
        assert_eq!(t.hostname, o.hostname);
        assert_eq!(t.node_name, o.node_name);
        assert_eq!(t.zone, o.zone);
        let tr = t.target_ref.clone().map(|r| (r.kind, r.namespace, r.name));
        let or = o.target_ref.clone().map(|r| (r.kind, r.namespace, r.name));
        assert_eq!(tr, or);
    }
    let tports = theirs.ports.clone().unwrap_or_default();
    assert_eq!(tports.len(), ours.ports.len());
    for (t, o) in tports.iter().zip(&ours.ports) {
        assert_eq!(
            (&t.name, t.port, &t.protocol, &t.app_protocol),
            (&o.name, o.port, &o.protocol, &o.app_protocol)
        );
    }
}

#[test]
fn json_both_ways() {
    let ours = sample();
    let theirs: discovery::EndpointSlice =
        serde_json::from_slice(&to_json(&ours).unwrap()).unwrap();
    assert_same(&ours, &theirs);
    assert_eq!(
        serde_json::to_value(&theirs).unwrap(),
        serde_json::to_value(&ours).unwrap()
    );
    let back: EndpointSlice = codec::from_json(&serde_json::to_vec(&theirs).unwrap()).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn yaml_both_ways() {
    let ours = sample();
    let theirs: discovery::EndpointSlice = codec::from_yaml(&to_yaml(&ours).unwrap()).unwrap();
    assert_same(&ours, &theirs);
    let yaml = to_yaml(&serde_json::to_value(&theirs).unwrap()).unwrap();
    let back: EndpointSlice = codec::from_yaml(&yaml).unwrap();
    assert_eq!(back, ours);
}

#[test]
fn fields_we_do_not_model_survive() {
    let theirs = discovery::EndpointSlice {
        address_type: "IPv6".into(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("web-abcde".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        endpoints: vec![discovery::Endpoint {
            addresses: vec!["2001:db8::7".into()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            deprecated_topology: Some(BTreeMap::from([("k".into(), "v".into())])),
            hints: Some(discovery::EndpointHints {
                for_zones: Some(vec![discovery::ForZone { name: "a".into() }]),
                ..Default::default()
            }),
            target_ref: Some(core::ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web-0".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ports: None,
    };
    let json_theirs = serde_json::to_value(&theirs).unwrap();
    let ours: EndpointSlice = serde_json::from_value(json_theirs.clone()).unwrap();
    assert!(ours.endpoints[0].extra.contains_key("hints"));
    assert!(ours.endpoints[0].extra.contains_key("deprecatedTopology"));
    assert_eq!(serde_json::to_value(&ours).unwrap(), json_theirs);
    let again: discovery::EndpointSlice =
        serde_json::from_value(serde_json::to_value(&ours).unwrap()).unwrap();
    assert_eq!(again, theirs);
}

#[test]
fn list_items_get_their_type_meta() {
    let list = json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": "9"},
        "items": [{"metadata": {"name": "a"}, "addressType": "IPv4", "endpoints": null}]});
    let ours: EndpointSliceList = serde_json::from_value(list).unwrap();
    let item = ours.items[0].clone().with_type_meta();
    let theirs: discovery::EndpointSlice =
        serde_json::from_value(serde_json::to_value(&item).unwrap()).unwrap();
    assert_eq!(theirs.metadata.name.as_deref(), Some("a"));
    assert_eq!(ours.extra["metadata"], json!({"resourceVersion": "9"}));
}

#[test]
fn rendered_slices_are_valid_k8s_openapi_slices() {
    let port = EndpointPort {
        port: 6379,
        ..EndpointPort::default()
    };
    let r = SliceRenderer::new("default", "redis", &[port], NotReadyPolicy::Keep).unwrap();
    let ready: Vec<IpAddr> = vec![
        "198.51.100.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    for s in r.render("uid-1", &ready, &["198.51.100.2".parse().unwrap()], &[]) {
        let v: Value = serde_json::to_value(&s).unwrap();
        let theirs: discovery::EndpointSlice = serde_json::from_value(v).unwrap();
        assert_same(&s, &theirs);
    }
}
