//! Property tests of the ApiServer response parsers (SPEC §12), beyond `client_parse.rs`
//! (arbitrary bytes and token soup): here the bodies are arbitrary *JSON values* — every shape,
//! and `Status`-like objects whose known fields carry the wrong types — so the parsers get past
//! JSON decoding every time. Real `Status` objects round-trip: what `parse_status` and
//! `ApiError::from_response` report is what the object said.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p k8s-endpoints --test proptest_status`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use k8s_endpoints::client::{ApiError, ApiErrorKind, ServiceInfo, parse_retry_after, parse_status};
use k8s_endpoints::{Status, StatusCause, StatusDetails};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Keys of `Status`, `StatusDetails` and `StatusCause`, plus a Service's.
const KEYS: &[&str] = &[
    "kind",
    "apiVersion",
    "metadata",
    "status",
    "message",
    "reason",
    "details",
    "code",
    "name",
    "group",
    "uid",
    "causes",
    "field",
    "retryAfterSeconds",
    "spec",
    "selector",
    "resourceVersion",
];

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-5i64..700).prop_map(Value::from),
        Just(json!(i64::from(i32::MAX) + 1)),
        Just(json!(i64::from(i32::MIN) - 1)),
        prop::sample::select(&["Status", "Failure", "Conflict", "TooManyRequests", "", "v1"][..])
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object with `Status`'s own keys, each holding any value (often the wrong type).
fn status_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..8),
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..5),
        any::<bool>(),
    )
        .prop_map(|(top, details, kind)| {
            let mut obj: Map<String, Value> =
                top.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if kind {
                obj.insert("kind".into(), json!("Status"));
            }
            if !details.is_empty() {
                obj.insert(
                    "details".into(),
                    Value::Object(
                        details
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    ),
                );
            }
            Value::Object(obj)
        })
}

fn headers(retry_after: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(retry_after) {
        h.insert(http::header::RETRY_AFTER, v);
    }
    h
}

fn exercise(code: u16, h: &HeaderMap, body: &[u8]) -> ApiError {
    let e = ApiError::from_response("PUT", "/api/v1/namespaces/d/endpoints/x", code, h, body);
    let _ = e.to_string();
    let _ = format!("{e:?}");
    let _ = e.kind();
    let _ = e.cause_lines();
    e
}

/// A real `Status` as the ApiServer sends it.
fn real_status() -> impl Strategy<Value = Status> {
    let cause = (
        prop::option::of("[A-Za-z]{1,12}"),
        prop::option::of("\\PC{0,30}"),
        prop::option::of("[a-z.\\[\\]0-9]{1,20}"),
    )
        .prop_map(|(reason, message, field)| StatusCause {
            reason,
            message,
            field,
            ..StatusCause::default()
        });
    let details = (
        prop::option::of("[a-z0-9-]{1,12}"),
        prop::option::of(prop_oneof![
            Just(String::new()),
            Just("coordination.k8s.io".to_owned())
        ]),
        prop::option::of(prop_oneof![
            Just("endpoints".to_owned()),
            Just("leases".to_owned())
        ]),
        prop::collection::vec(cause, 0..4),
        prop::option::of(-5i32..100),
    )
        .prop_map(|(name, group, kind, causes, retry)| StatusDetails {
            name,
            group,
            kind,
            causes,
            retry_after_seconds: retry,
            ..StatusDetails::default()
        });
    (
        prop::option::of(prop::sample::select(
            &[
                "Conflict",
                "NotFound",
                "Invalid",
                "TooManyRequests",
                "Forbidden",
                "InternalError",
                "",
            ][..],
        )),
        prop::option::of("\\PC{0,60}"),
        prop::option::of(details),
        prop::option::of(100i32..600),
    )
        .prop_map(|(reason, message, details, code)| Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: Some("Failure".into()),
            reason: reason.map(str::to_owned),
            message,
            details,
            code,
            ..Status::default()
        })
}

proptest! {
    #[test]
    fn any_json_value_is_parsed_without_panicking(v in json_value(), code in 0u16..1000, retry in "\\PC{0,8}") {
        let body = serde_json::to_vec(&v).unwrap();
        if let Some(st) = parse_status(&body) {
            prop_assert!(st.kind == "Status" || st.code.is_some() || st.reason.is_some());
        }
        let _ = exercise(code, &headers(&retry), &body);
        let _ = ServiceInfo::from_json(&body);
    }

    #[test]
    fn status_like_objects_are_parsed_without_panicking(v in status_like(), code in 400u16..600) {
        let body = serde_json::to_vec(&v).unwrap();
        let parsed = parse_status(&body);
        let e = exercise(code, &HeaderMap::new(), &body);
        prop_assert_eq!(e.code, code);
        prop_assert!(!e.reason.is_empty());
        // A negative or zero retryAfterSeconds is no wait.
        prop_assert!(e.retry_after.is_none_or(|d| d > Duration::ZERO));
        if parsed.is_none() {
            prop_assert!(e.status.is_none());
            prop_assert!(e.causes.is_empty());
        }
    }

    #[test]
    fn real_statuses_round_trip(st in real_status(), code in 400u16..600, header in prop::option::of(0u64..100)) {
        let body = serde_json::to_vec(&st).unwrap();
        let parsed = parse_status(&body).expect("a Status");
        prop_assert_eq!(&parsed, &st);
        let h = header.map_or_else(HeaderMap::new, |s| headers(&format!(" {s} ")));
        let e = exercise(code, &h, &body);
        let canonical = StatusCode::from_u16(code).ok().and_then(|c| c.canonical_reason()).unwrap_or("Unknown Status");
        let want_reason = st.reason.clone().filter(|r| !r.is_empty()).unwrap_or_else(|| canonical.to_owned());
        prop_assert_eq!(&e.reason, &want_reason);
        prop_assert_eq!(&e.message, &st.message.clone().unwrap_or_default());
        let causes = st.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
        prop_assert_eq!(&e.causes, &causes);
        prop_assert_eq!(e.cause_lines().len(), causes.len());
        // The header wins; else details.retryAfterSeconds when positive.
        let from_body = st
            .details
            .as_ref()
            .and_then(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
        prop_assert_eq!(e.retry_after, header.map(Duration::from_secs).or(from_body));
        if code == 409 && st.reason.as_deref() == Some("Conflict") {
            prop_assert_eq!(e.kind(), ApiErrorKind::Conflict);
        }
    }

    #[test]
    fn retry_after_seconds_round_trip(n in any::<u64>(), pad_l in "[ \t]{0,3}", pad_r in "[ \t]{0,3}") {
        prop_assert_eq!(parse_retry_after(&format!("{pad_l}{n}{pad_r}")), Some(Duration::from_secs(n)));
    }
}
