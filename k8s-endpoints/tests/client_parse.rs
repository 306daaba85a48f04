//! Property tests: the parsers of ApiServer responses never panic on any input (SPEC §12),
//! and what they keep of a body stays short and printable.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use http::{HeaderMap, HeaderValue};
use k8s_endpoints::client::{
    ApiError, SNIPPET_CHARS, ServiceInfo, VersionInfo, parse_ca_pem, parse_retry_after,
    parse_status, parse_warning, sanitize_snippet,
};
use proptest::prelude::*;

/// Text built from the pieces that matter, so parsing gets past the first byte.
fn statusish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("null".to_owned()),
            Just("\"kind\"".to_owned()),
            Just("\"Status\"".to_owned()),
            Just("\"code\"".to_owned()),
            Just("\"reason\"".to_owned()),
            Just("\"details\"".to_owned()),
            Just("\"causes\"".to_owned()),
            Just("\"retryAfterSeconds\"".to_owned()),
            Just("\"spec\"".to_owned()),
            Just("\"selector\"".to_owned()),
            Just("<html>".to_owned()),
            Just("-1".to_owned()),
            Just("99999999999".to_owned()),
            "[a-z\"\\\\ ]{0,6}".prop_map(|s| s),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn api_errors_never_panic(body in prop::collection::vec(any::<u8>(), 0..600), code in 0u16..1000, retry in ".{0,12}") {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&retry) {
            headers.insert(http::header::RETRY_AFTER, v);
        }
        let e = ApiError::from_response("PUT", "/p", code, &headers, &body);
        let _ = e.to_string();
        let _ = e.kind();
        let _ = e.cause_lines();
    }

    #[test]
    fn status_like_bodies_never_panic(body in statusish(), code in 400u16..600) {
        let e = ApiError::from_response("GET", "/p", code, &HeaderMap::new(), body.as_bytes());
        let _ = e.to_string();
        let _ = parse_status(body.as_bytes());
        let _ = ServiceInfo::from_json(body.as_bytes());
        let _ = serde_json::from_str::<VersionInfo>(&body).map(|v| v.numbers());
    }

    #[test]
    fn snippets_are_short_and_printable(body in prop::collection::vec(any::<u8>(), 0..5000)) {
        let s = sanitize_snippet(&body);
        prop_assert!(s.chars().count() <= SNIPPET_CHARS + 1);
        prop_assert!(!s.chars().any(char::is_control));
    }

    #[test]
    fn warnings_and_retry_after_never_panic(value in ".{0,200}") {
        let _ = parse_warning(&value);
        let _ = parse_retry_after(&value);
    }

    #[test]
    fn ca_files_never_panic(pem in prop::collection::vec(any::<u8>(), 0..800)) {
        let _ = parse_ca_pem(std::path::Path::new("/ca.crt"), &pem);
        let mut framed = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        framed.extend_from_slice(&pem);
        framed.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
        let _ = parse_ca_pem(std::path::Path::new("/ca.crt"), &framed);
    }
}
