//! Notifier tests with real scripts and real loopback HTTP receivers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use probe_core::Health;
use secrecy::SecretString;

use super::testing::{Receiver, capture_logs};
use super::*;
use crate::config::{Webhook, WebhookFormat};

fn event(target: &str, to: Health) -> NotifyEvent {
    NotifyEvent::Target(TargetEvent {
        service: "redis".into(),
        target: target.into(),
        ip: "198.51.100.11".parse().unwrap(),
        port: 38080,
        from: if to == Health::Up {
            Health::Down
        } else {
            Health::Up
        },
        to,
        error: (to == Health::Down).then(|| "connection refused".to_owned()),
        at: SystemTime::now(),
        agreed: None,
    })
}

fn script(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("notify.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fast() -> NotifyOptions {
    NotifyOptions {
        retry: RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
        },
        ..NotifyOptions::default()
    }
}

fn hooks(url: String, format: WebhookFormat, secret: Option<&str>) -> NotifyConfig {
    NotifyConfig {
        script: None,
        webhooks: vec![Webhook {
            url,
            format,
            secret: secret.map(|s| SecretString::from(s.to_owned())),
        }],
    }
}

fn stats(n: &Notifier) -> (u64, u64, u64, u64) {
    n.stats()[0].snapshot()
}

#[tokio::test]
async fn the_script_runs_once_per_event_in_order_per_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("calls");
    let config = NotifyConfig {
        script: Some(script(dir.path(), &format!("echo \"$1 $2 $3\" >> {out:?}"))),
        webhooks: Vec::new(),
    };
    let n = Notifier::new(&config, NotifyOptions::default()).unwrap();
    for i in 0..5 {
        let to = if i % 2 == 0 { Health::Down } else { Health::Up };
        n.notify(event("node-01", to));
    }
    n.notify(event("node-02", Health::Down));
    assert!(n.shutdown(Duration::from_secs(10)).await);
    let calls = std::fs::read_to_string(&out).unwrap();
    let node1: Vec<&str> = calls.lines().filter(|l| l.contains("node-01")).collect();
    assert_eq!(
        node1,
        [
            "TARGET redis/node-01 DOWN",
            "TARGET redis/node-01 UP",
            "TARGET redis/node-01 DOWN",
            "TARGET redis/node-01 UP",
            "TARGET redis/node-01 DOWN"
        ]
    );
    assert_eq!(calls.lines().count(), 6, "{calls}");
    assert_eq!(stats(&n), (6, 0, 0, 6));
}

#[tokio::test]
async fn notify_never_waits_for_a_hanging_script() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let config = NotifyConfig {
        script: Some(script(
            dir.path(),
            &format!("sleep 30 & echo $! >> {pids:?}; wait"),
        )),
        webhooks: Vec::new(),
    };
    let options = NotifyOptions {
        queue_capacity: 2,
        lanes: 1,
        ..NotifyOptions::default()
    };
    let n = Notifier::new(&config, options).unwrap();
    let start = Instant::now();
    for i in 0..1000 {
        n.notify(event(&format!("node-{i}"), Health::Down));
    }
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    let dropped = n.stats()[0].dropped.load(Ordering::Relaxed);
    assert!(
        dropped >= 997,
        "one running, two queued at most: {dropped} dropped"
    );

    // Let the first script start, then shut down: the grace ends, the run is abandoned and its
    // process group killed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    assert!(!n.shutdown(Duration::from_millis(200)).await);
    assert!(start.elapsed() < Duration::from_secs(2));
    let (sent, failed, dropped, _) = stats(&n);
    assert_eq!((sent, failed, dropped), (0, 0, 1000));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = std::fs::read_to_string(&pids).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the script's child survived: {stat}"
    );
}

#[tokio::test]
async fn a_json_webhook_gets_one_post_per_event() {
    let rx = Receiver::start(&[], (200, "")).await;
    let n = Notifier::new(&hooks(rx.url("/hook"), WebhookFormat::Json, None), fast()).unwrap();
    let events = [
        event("node-01", Health::Down),
        event("node-02", Health::Down),
        event("node-01", Health::Up),
    ];
    for e in &events {
        n.notify(e.clone());
    }
    assert!(n.shutdown(Duration::from_secs(5)).await);
    let got = rx.requests();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.uri.path(), "/hook");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("user-agent").unwrap().starts_with("epcheck/"));
    }
    let mut bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    let mut expected: Vec<_> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let key = |v: &serde_json::Value| v.to_string();
    bodies.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(bodies, expected);
    assert_eq!(stats(&n), (3, 0, 0, 3));
}

#[tokio::test]
async fn retries_after_5xx_stop_at_the_first_success() {
    let rx = Receiver::start(&[(500, "busy"), (429, "")], (200, "")).await;
    let n = Notifier::new(&hooks(rx.url("/"), WebhookFormat::Json, None), fast()).unwrap();
    n.notify(event("node-01", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    let got = rx.requests();
    assert_eq!(got.len(), 3, "500, 429, then 200 and nothing more");
    assert!(got.windows(2).all(|w| w[0].body == w[1].body));
    assert_eq!(stats(&n), (1, 0, 0, 3));
}

#[tokio::test]
async fn other_4xx_are_not_retried_and_5xx_give_up() {
    let rx = Receiver::start(&[(400, "bad")], (503, "")).await;
    let n = Notifier::new(&hooks(rx.url("/"), WebhookFormat::Json, None), fast()).unwrap();
    n.notify(event("node-01", Health::Down));
    n.notify(event("node-01", Health::Up));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    assert_eq!(rx.requests().len(), 1 + 4);
    assert_eq!(stats(&n), (0, 2, 0, 5));
}

#[tokio::test]
async fn a_closed_port_is_a_counted_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook");
    let n = Notifier::new(&hooks(url, WebhookFormat::Json, None), fast()).unwrap();
    n.notify(event("node-01", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    assert_eq!(stats(&n), (0, 1, 0, 4));
}

/// Recomputes DingTalk's signature the way its documentation's sample code does.
fn expected_sign(secret: &str, timestamp: &str) -> String {
    use base64::Engine as _;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD
        .encode(tag.as_ref())
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test]
async fn dingtalk_messages_are_signed() {
    const SECRET: &str = "SEC0123456789abcdef";
    let rx = Receiver::checking(|r| {
        let q = r.uri.query().unwrap_or("");
        let param = |k: &str| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_owned()
        };
        let ts: u64 = param("timestamp").parse().unwrap_or(0);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ok = param("access_token") == "tok"
            && now.abs_diff(ts) < 10_000
            && param("sign") == expected_sign(SECRET, &param("timestamp"));
        (!ok).then(|| {
            (
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#.to_owned(),
            )
        })
    })
    .await;
    let config = hooks(
        rx.url("/robot/send?access_token=tok"),
        WebhookFormat::DingTalk,
        Some(SECRET),
    );
    let n = Notifier::new(&config, fast()).unwrap();
    n.notify(event("node-02", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    let body = got[0].json();
    assert_eq!(body["msgtype"], "text");
    let content = body["text"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("epcheck: redis/node-02 (198.51.100.11:38080) is DOWN, was UP"),
        "{content}"
    );
    assert_eq!(
        stats(&n),
        (1, 0, 0, 1),
        "the receiver accepted the signature"
    );
}

#[tokio::test]
async fn a_dingtalk_errcode_fails_without_retry_and_no_secret_is_logged() {
    let (logs, _guard) = capture_logs();
    let rx = Receiver::start(
        &[],
        (200, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
    )
    .await;
    let config = hooks(
        rx.url("/robot/send?access_token=TOKEN-abc123"),
        WebhookFormat::DingTalk,
        Some("SEC-very-secret"),
    );
    let n = Notifier::new(&config, fast()).unwrap();
    n.notify(event("node-02", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(stats(&n), (0, 1, 0, 1));

    // A second failing webhook: connection refused, retried, every attempt logged at debug
    // (and hyper's own trace logs captured too).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = hooks(
        format!("http://user:PASSWORD@127.0.0.1:{port}/x?access_token=TOKEN-abc123"),
        WebhookFormat::DingTalk,
        Some("SEC-very-secret"),
    );
    let n = Notifier::new(&config, fast()).unwrap();
    n.notify(event("node-02", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);

    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("notification failed"), "{logs}");
    assert!(logs.contains("errcode 310000"), "{logs}");
    assert!(logs.contains("/robot/send"), "{logs}");
    for secret in ["TOKEN-abc123", "SEC-very-secret", "PASSWORD", "sign="] {
        assert!(!logs.contains(secret), "{secret} leaked:\n{logs}");
    }
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_is_retried() {
    let rx = Receiver::slow(Duration::from_millis(500)).await;
    let options = NotifyOptions {
        retry: RetryPolicy {
            attempts: 2,
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        },
        ..NotifyOptions::default()
    };
    let n = Notifier::new(&hooks(rx.url("/"), WebhookFormat::Json, None), options).unwrap();
    n.notify(event("node-01", Health::Down));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    assert_eq!(stats(&n), (0, 1, 0, 2));
}

#[tokio::test]
async fn bad_configs_and_the_disabled_notifier() {
    let e = Notifier::new(
        &hooks("mailto:x?access_token=T".into(), WebhookFormat::Json, None),
        fast(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("notify.webhooks[0].url"), "{e}");
    assert!(!e.contains("access_token"), "{e}");
    let n = Notifier::disabled();
    assert!(!n.is_enabled());
    n.notify(event("node-01", Health::Down));
    assert!(n.shutdown(Duration::from_millis(10)).await);
}

#[test]
fn new_needs_a_runtime() {
    let e = Notifier::new(&NotifyConfig::default(), NotifyOptions::default()).unwrap_err();
    assert!(matches!(e, NotifyError::NoRuntime));
}

#[tokio::test]
async fn the_observer_hears_every_outcome() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&heard);
    let options = NotifyOptions {
        observer: Some(Arc::new(move |ch: &ChannelStats, d: Delivery| {
            h.lock()
                .unwrap()
                .push(format!("{} {} {}", ch.name, ch.kind, d.as_str()));
        })),
        ..fast()
    };
    let rx = Receiver::start(&[(404, "")], (200, "")).await;
    let n = Notifier::new(&hooks(rx.url("/"), WebhookFormat::Json, None), options).unwrap();
    n.notify(event("node-01", Health::Down));
    n.notify(event("node-01", Health::Up));
    assert!(n.shutdown(Duration::from_secs(5)).await);
    n.notify(event("node-01", Health::Down));
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "webhook-0 json failed",
            "webhook-0 json sent",
            "webhook-0 json dropped"
        ]
    );
    assert_eq!(stats(&n), (1, 1, 1, 2));
}
