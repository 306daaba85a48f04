//! Rendering the desired object and the body of a `PUT`, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;

use k8s_endpoints::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
    NotReadyPolicy, ObjectReference, Renderer, apply_to_live, diff,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(name: Option<&str>, port: i32) -> EndpointPort {
    EndpointPort {
        name: name.map(str::to_owned),
        port,
        ..EndpointPort::default()
    }
}

/// Two subsets with the same port, once with and once without an explicit protocol.
fn template() -> Endpoints {
    let mut t = Endpoints::new("x", "y");
    t.subsets = vec![
        EndpointSubset {
            addresses: vec![EndpointAddress::from_ip(ip("10.0.0.71"))],
            ports: vec![port(None, 8080)],
            ..EndpointSubset::default()
        },
        EndpointSubset {
            addresses: vec![EndpointAddress::from_ip(ip("10.0.0.72"))],
            ports: vec![EndpointPort {
                protocol: Some("TCP".into()),
                ..port(None, 8080)
            }],
            ..EndpointSubset::default()
        },
    ];
    t
}

#[test]
fn template_ports_are_merged() {
    let r = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    assert_eq!(r.ports().len(), 1);
    assert_eq!(
        (r.namespace(), r.name(), r.policy()),
        ("default", "redis", NotReadyPolicy::Keep)
    );
}

#[test]
fn render_sorts_dedups_and_splits() {
    let r = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let ep = r.render(
        &[
            ip("198.51.100.3"),
            ip("2001:db8::1"),
            ip("198.51.100.1"),
            ip("198.51.100.3"),
        ],
        &[ip("198.51.100.2"), ip("198.51.100.1")],
        None,
    );
    assert_eq!(ep.subsets.len(), 1);
    let s = &ep.subsets[0];
    let ips = |v: &[EndpointAddress]| v.iter().map(|a| a.ip.clone()).collect::<Vec<_>>();
    assert_eq!(
        ips(&s.addresses),
        ["198.51.100.1", "198.51.100.3", "2001:db8::1"]
    );
    assert_eq!(ips(&s.not_ready_addresses), ["198.51.100.2"]);
    assert_eq!(ep.metadata.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    assert_eq!(ep.key(), "default/redis");
}

#[test]
fn drop_policy_and_empty_subsets() {
    let r = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Drop).unwrap();
    let ep = r.render(&[ip("198.51.100.1")], &[ip("198.51.100.2")], None);
    assert!(ep.subsets[0].not_ready_addresses.is_empty());
    assert!(
        r.render(&[], &[ip("198.51.100.2")], None)
            .subsets
            .is_empty()
    );
    let keep = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    assert!(keep.render(&[], &[], None).subsets.is_empty());
    assert_eq!(
        keep.render(&[], &[ip("198.51.100.2")], None).subsets.len(),
        1
    );
}

#[test]
fn port_precedence() {
    let svc = Some(vec![port(Some("redis"), 6379)]);
    let r = Renderer::new(&template(), "default", "redis", svc, NotReadyPolicy::Keep).unwrap();
    let ready = [ip("198.51.100.1")];
    assert_eq!(
        r.render(&ready, &[], None).subsets[0].ports,
        vec![port(Some("redis"), 6379)]
    );
    let mut live = Endpoints::new("default", "redis");
    assert_eq!(
        r.render(&ready, &[], Some(&live)).subsets[0].ports[0].port,
        6379
    );
    live.subsets.push(EndpointSubset {
        ports: vec![port(Some("redis"), 7000)],
        ..EndpointSubset::default()
    });
    assert_eq!(
        r.render(&ready, &[], Some(&live)).subsets[0].ports[0].port,
        7000
    );
    let r = Renderer::new(
        &template(),
        "default",
        "redis",
        Some(vec![]),
        NotReadyPolicy::Keep,
    )
    .unwrap();
    assert_eq!(r.ports()[0].port, 8080);
}

#[test]
fn template_checks() {
    let mut t = template();
    t.kind = "Service".into();
    let err = Renderer::new(&t, "default", "redis", None, NotReadyPolicy::Keep)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kind \"Service\"; expected \"Endpoints\""),
        "{err}"
    );
    let bad = Some(vec![port(None, 80), port(None, 81)]);
    let err = Renderer::new(&template(), "default", "redis", bad, NotReadyPolicy::Keep)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the service's ports: ports[0] has no name"),
        "{err}"
    );
    assert!(Renderer::new(&template(), "Default", "redis", None, NotReadyPolicy::Keep).is_err());
    assert!(Renderer::new(&template(), "default", "../x", None, NotReadyPolicy::Keep).is_err());
}

#[test]
fn server_metadata_is_dropped() {
    let mut t = template();
    t.metadata.resource_version = Some("5".into());
    t.metadata.uid = Some("u".into());
    t.metadata.extra.insert("selfLink".into(), "/x".into());
    t.metadata.annotations.insert("a".into(), "b".into());
    let r = Renderer::new(&t, "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let ep = r.render(&[], &[], None);
    assert_eq!(ep.metadata.resource_version, None);
    assert_eq!(ep.metadata.uid, None);
    assert!(ep.metadata.extra.is_empty());
    assert_eq!(ep.metadata.annotations["a"], "b");
}

#[test]
fn apply_keeps_live_metadata_and_address_details() {
    let mut live = Endpoints::new("default", "redis");
    live.metadata.resource_version = Some("77".into());
    live.metadata.labels.insert("team".into(), "storage".into());
    live.subsets = vec![EndpointSubset {
        addresses: vec![EndpointAddress {
            ip: "2001:DB8::7".into(),
            hostname: Some("r7".into()),
            target_ref: Some(ObjectReference {
                name: Some("vm-7".into()),
                ..ObjectReference::default()
            }),
            ..EndpointAddress::default()
        }],
        ports: vec![port(Some("redis"), 6379)],
        ..EndpointSubset::default()
    }];
    let r = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let desired = r.render(&[ip("198.51.100.1")], &[ip("2001:db8::7")], Some(&live));
    let body = apply_to_live(&live, &desired);
    assert_eq!(body.metadata.resource_version.as_deref(), Some("77"));
    assert_eq!(body.metadata.labels["team"], "storage");
    assert_eq!(body.metadata.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    let s = &body.subsets[0];
    assert_eq!(s.ports, vec![port(Some("redis"), 6379)]);
    let moved = &s.not_ready_addresses[0];
    assert_eq!(moved.ip, "2001:db8::7");
    assert_eq!(moved.hostname.as_deref(), Some("r7"));
    assert_eq!(
        moved.target_ref.as_ref().unwrap().name.as_deref(),
        Some("vm-7")
    );
    assert!(diff(&body, &desired).is_empty());
}

#[test]
fn apply_leaves_a_foreign_manager_label_alone() {
    let mut live = Endpoints::new("default", "redis");
    live.metadata
        .labels
        .insert(MANAGED_BY_LABEL.into(), "Helm".into());
    let r = Renderer::new(&template(), "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let desired = r.render(&[], &[], Some(&live));
    assert!(diff(&live, &desired).is_empty(), "nothing to write");
    let body = apply_to_live(&live, &desired);
    assert_eq!(body.metadata.labels[MANAGED_BY_LABEL], "Helm");
}

#[test]
fn apply_fills_in_missing_type_meta() {
    let mut live = Endpoints::new("default", "redis");
    live.api_version.clear();
    live.kind.clear();
    let body = apply_to_live(&live, &live);
    assert_eq!(
        (body.api_version.as_str(), body.kind.as_str()),
        ("v1", "Endpoints")
    );
}
