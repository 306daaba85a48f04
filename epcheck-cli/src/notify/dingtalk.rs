//! DingTalk custom robots: the text message, the signature, and the reply check.
//!
//! A robot with the "sign" (加签) security setting wants two query parameters added to its
//! webhook URL: `timestamp`, the current time in Unix milliseconds (within an hour of DingTalk's
//! clock), and `sign`, computed as
//!
//! 1. `string_to_sign = timestamp + "\n" + secret`,
//! 2. HMAC-SHA256 of it, keyed with `secret` (UTF-8 bytes),
//! 3. standard Base64 of the 32-byte MAC,
//! 4. URL-encoded (`+`, `/` and `=` become `%2B`, `%2F`, `%3D`).
//!
//! The reply is HTTP 200 with `{"errcode": 0, "errmsg": "ok"}` on success; any other `errcode`
//! (a bad signature, a missing keyword, a rate limit) is a failure that retrying the same message
//! will not fix. A robot with the "keyword" setting needs the keyword in the text: every message
//! starts with `epcheck`, so `epcheck` works as the keyword.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::Uri;
use serde_json::json;

use super::event::{NotifyEvent, rfc3339};

/// The robot's text message for `event`.
pub(crate) fn message(event: &NotifyEvent) -> serde_json::Value {
    json!({"msgtype": "text", "text": {"content": text(event)}})
}

/// The human-readable text of `event`.
pub(crate) fn text(event: &NotifyEvent) -> String {
    match event {
        NotifyEvent::Target(t) => {
            let addr = std::net::SocketAddr::new(t.ip, t.port);
            let mut s = format!(
                "epcheck: {}/{} ({addr}) is {}, was {}",
                t.service,
                t.target,
                t.to.as_str().to_ascii_uppercase(),
                t.from.as_str().to_ascii_uppercase()
            );
            if let Some(error) = &t.error {
                s.push_str(": ");
                s.push_str(error);
            }
            if let Some(agreed) = &t.agreed {
                s.push_str(" (");
                s.push_str(agreed);
                s.push(')');
            }
            s.push_str("\nat ");
            s.push_str(&rfc3339(t.at));
            s
        }
        NotifyEvent::Service(e) => {
            let was = e
                .from
                .map(|f| format!(", was {}", f.as_str().to_ascii_uppercase()))
                .unwrap_or_default();
            format!(
                "epcheck: service {} is {}{was}: {} of {} targets ready\nat {}",
                e.service,
                e.to.as_str().to_ascii_uppercase(),
                e.ready,
                e.total,
                rfc3339(e.at)
            )
        }
    }
}

/// The signature for `timestamp_ms`: Base64 of HMAC-SHA256(`secret`, `"{timestamp_ms}\n{secret}"`),
/// not yet URL-encoded.
pub fn sign(secret: &str, timestamp_ms: u64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    STANDARD.encode(tag.as_ref())
}

/// `base` with `timestamp` and `sign` appended to its query.
pub(crate) fn signed_uri(base: &Uri, secret: &str, timestamp_ms: u64) -> Result<Uri, String> {
    let sign = url_encode(&sign(secret, timestamp_ms));
    let path = base.path();
    let query = match base.query() {
        Some(q) if !q.is_empty() => format!("{q}&timestamp={timestamp_ms}&sign={sign}"),
        _ => format!("timestamp={timestamp_ms}&sign={sign}"),
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        format!("{path}?{query}")
            .parse()
            .map_err(|e| format!("cannot add the signature to the URL: {e}"))?,
    );
    Uri::from_parts(parts).map_err(|e| format!("cannot add the signature to the URL: {e}"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a 2xx reply's body: `errcode` must be 0.
pub(crate) fn check_reply(body: &[u8]) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "DingTalk replied with something that is not JSON".to_owned())?;
    match value.get("errcode").and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(()),
        Some(code) => {
            let msg = value
                .get("errmsg")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            Err(format!(
                "DingTalk refused the message: errcode {code}: {}",
                super::webhook::snippet(msg.as_bytes())
            ))
        }
        None => Err("DingTalk's reply has no errcode".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use probe_core::Health;

    use super::*;
    use crate::notify::event::{ServiceEvent, ServiceHealth, TargetEvent};

    #[test]
    fn signature_matches_a_known_vector() {
        // Computed independently:
        // printf '1700000000000\nSECtest' | openssl dgst -sha256 -hmac SECtest -binary | base64
        // (and with Python's hmac/hashlib/base64, DingTalk's own sample code).
        assert_eq!(
            sign("SECtest", 1_700_000_000_000),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
        );
        assert_ne!(
            sign("SECtest", 1_700_000_000_000),
            sign("SECtest", 1_700_000_000_001)
        );
    }

    #[test]
    fn signed_uri_keeps_the_token() {
        let base: Uri = "https://oapi.dingtalk.com/robot/send?access_token=abc"
            .parse()
            .unwrap();
        let u = signed_uri(&base, "SECx", 42).unwrap();
        let q = u.query().unwrap();
        assert!(q.starts_with("access_token=abc&timestamp=42&sign="), "{q}");
        assert!(!q["access_token=abc&timestamp=42&sign=".len()..].contains(['+', '/', '=']));
        let bare: Uri = "http://127.0.0.1:1/hook".parse().unwrap();
        let u = signed_uri(&bare, "SECx", 42).unwrap();
        assert!(u.query().unwrap().starts_with("timestamp=42&sign="));
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(url_encode("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn replies() {
        assert!(check_reply(br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        let e = check_reply(br#"{"errcode":310000,"errmsg":"sign not match"}"#).unwrap_err();
        assert!(e.contains("310000") && e.contains("sign not match"), "{e}");
        assert!(check_reply(b"<html>").is_err());
        assert!(check_reply(b"{}").is_err());
    }

    #[test]
    fn texts() {
        let at = UNIX_EPOCH + Duration::from_secs(1_735_787_045);
        let t = NotifyEvent::Target(TargetEvent {
            service: "redis".into(),
            target: "node-02".into(),
            ip: "198.51.100.11".parse().unwrap(),
            port: 38080,
            from: Health::Up,
            to: Health::Down,
            error: Some("connection refused".into()),
            at,
            agreed: None,
        });
        assert_eq!(
            text(&t),
            "epcheck: redis/node-02 (198.51.100.11:38080) is DOWN, was UP: connection refused\n\
             at 2025-01-02T03:04:05.000Z"
        );
        // A consensus decision says how many replicas agreed.
        let target = probe_core::Target::new("redis", "node-02", [198, 51, 100, 11].into(), 38080);
        let tally = k8s_endpoints::consensus::Tally {
            views: 3,
            up: 1,
            down: 2,
            abstain: 0,
            remote_down: 1,
        };
        let mut decided = TargetEvent::decided(&target, false, &tally);
        decided.at = at;
        assert_eq!(
            text(&NotifyEvent::Target(decided.clone())),
            "epcheck: redis/node-02 (198.51.100.11:38080) is DOWN, was UP (2/3 see it down)\n\
             at 2025-01-02T03:04:05.000Z"
        );
        let vars = crate::notify::script::vars(&NotifyEvent::Target(decided));
        assert!(
            vars.contains(&("EPCHECK_AGREED", "2/3 see it down".to_owned())),
            "{vars:?}"
        );
        let s = NotifyEvent::Service(ServiceEvent {
            service: "redis".into(),
            from: Some(ServiceHealth::Healthy),
            to: ServiceHealth::Degraded,
            ready: 2,
            total: 3,
            at,
        });
        assert_eq!(
            message(&s),
            json!({"msgtype": "text", "text": {"content":
                "epcheck: service redis is DEGRADED, was HEALTHY: 2 of 3 targets ready\n\
                 at 2025-01-02T03:04:05.000Z"}})
        );
    }
}
