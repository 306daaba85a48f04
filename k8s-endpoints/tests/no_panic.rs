//! Property tests: the parsers of untrusted input never panic (SPEC §12), and rendering and
//! diffing keep their invariants for any set of IPs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;

use k8s_endpoints::token::parse_token;
use k8s_endpoints::{
    ContentType, Endpoints, NotReadyPolicy, PathTemplate, Renderer, Status, apply_to_live, codec,
    diff, validate_name, validate_namespace,
};
use proptest::prelude::*;

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
        // Few distinct values, so that duplicates and overlaps happen.
        (0u8..8).prop_map(|i| IpAddr::from([198, 51, 100, i])),
    ]
}

/// JSON-ish text built from the tokens that matter, so that decoding gets past the first byte.
fn jsonish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("null".to_owned()),
            Just("\"metadata\"".to_owned()),
            Just("\"subsets\"".to_owned()),
            Just("\"addresses\"".to_owned()),
            Just("\"ports\"".to_owned()),
            Just("\"port\"".to_owned()),
            Just("\"labels\"".to_owned()),
            Just("\"ip\"".to_owned()),
            Just("\"details\"".to_owned()),
            Just("\"causes\"".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            "\"[a-z.:0-9]{0,8}\"",
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn json_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), text in jsonish()) {
        let _ = codec::from_json::<Endpoints>(&bytes);
        let _ = codec::from_json::<Status>(&bytes);
        let _ = codec::from_json::<Endpoints>(text.as_bytes());
        let _ = codec::from_json::<Status>(text.as_bytes());
    }

    #[test]
    fn yaml_decoding_never_panics(text in "[-a-z: \n\\[\\]{}0-9.,'\"&*!|>#]{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = codec::from_yaml::<Endpoints>(&text);
        let _ = codec::decode::<Endpoints>(&bytes, ContentType::Yaml);
    }

    #[test]
    fn token_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(token) = parse_token(&bytes) {
            let value = token.expose_secret();
            prop_assert!(!value.is_empty());
            prop_assert!(value.bytes().all(|b| b.is_ascii_graphic()));
        }
    }

    #[test]
    fn path_parsing_never_panics(s in "\\PC{0,80}", t in "(/[a-zA-Z%./?#]{0,6}|/myNameSpaces|/myEndPoints){0,6}") {
        let _ = PathTemplate::parse(&s);
        let _ = PathTemplate::parse(&t);
    }

    #[test]
    fn accepted_names_stay_inside_one_segment(ns in "\\PC{0,70}", name in "[-a-zA-Z0-9./%_]{0,70}") {
        let template = PathTemplate::default();
        if let Ok(path) = template.object_path(&ns, &name) {
            prop_assert!(validate_namespace(&ns).is_ok() && validate_name(&name).is_ok());
            prop_assert_eq!(path.split('/').count(), 7);
            prop_assert!(!path.contains("..") && !path.contains('%') && !path.contains("//"));
        }
    }

    #[test]
    fn render_then_write_converges(
        ready in prop::collection::vec(any_ip(), 0..12),
        not_ready in prop::collection::vec(any_ip(), 0..12),
        keep in any::<bool>(),
    ) {
        let policy = if keep { NotReadyPolicy::Keep } else { NotReadyPolicy::Drop };
        let template = Endpoints::new("t", "t");
        let r = Renderer::new(&template, "default", "svc", None, policy).unwrap();
        let desired = r.render(&ready, &not_ready, None);
        // At most one subset, never an empty one.
        prop_assert!(desired.subsets.len() <= 1);
        for s in &desired.subsets {
            prop_assert!(!(s.addresses.is_empty() && s.not_ready_addresses.is_empty()));
            let ips: Vec<IpAddr> = s.addresses.iter().map(|a| a.ip.parse().unwrap()).collect();
            prop_assert!(ips.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        }
        // Writing it over any live object reaches a fixed point in one step.
        let live = r.render(&not_ready, &ready, None);
        let written = apply_to_live(&live, &desired);
        prop_assert!(diff(&written, &desired).is_empty());
        prop_assert_eq!(apply_to_live(&written, &desired), written.clone());
        // And it survives both body formats.
        for ct in [ContentType::Json, ContentType::Yaml] {
            let bytes = codec::encode(&written, ct).unwrap();
            let back: Endpoints = codec::decode(&bytes, ct).unwrap();
            prop_assert_eq!(&back, &written);
        }
    }
}
