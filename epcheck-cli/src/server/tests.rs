//! The real server on `127.0.0.1:0`, spoken to over raw TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use probe_core::{FailureKind, Health, ProbeError, ProbeOutcome};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::metrics::{Channel, Delivery, Metrics};

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    metrics: Metrics,
    readiness: Readiness,
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(done.is_ok(), "serve did not return after shutdown");
    }
}

fn snapshot() -> StatusSnapshot {
    StatusSnapshot {
        identity: Some("epcheck-a".into()),
        leader: Some("epcheck-a".into()),
        is_leader: true,
        failsafe_active: false,
        consensus: None,
        services: vec![ServiceStatus {
            service: "redis".into(),
            namespace: "default".into(),
            name: "redis".into(),
            ready: 1,
            configured: 2,
            last_reconcile: Some(UNIX_EPOCH + Duration::from_secs(1_767_323_045)),
            error: None,
            targets: vec![TargetStatus {
                name: "node-01".into(),
                ip: IpAddr::from([198, 51, 100, 10]),
                port: 38080,
                state: Health::Up,
                since: Some(UNIX_EPOCH),
                last_error: None,
                last_probe: Some(UNIX_EPOCH + Duration::from_millis(1500)),
                views: None,
            }],
        }],
    }
}

async fn start() -> Server {
    let mut registry = Registry::default();
    let metrics = Metrics::new();
    metrics.register(&mut registry);
    let readiness = Readiness::new();
    let state = HttpState::new(Arc::new(registry), readiness.clone(), Arc::new(snapshot));
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind 127.0.0.1:0: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local_addr: {e}"),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        task,
        metrics,
        readiness,
    }
}

/// Sends `head` (request line and headers, without the final blank line) with
/// `Connection: close` and returns (status, headers, body).
async fn send(addr: SocketAddr, head: &str) -> (u16, String, String) {
    match fixtures::http::send(&addr.to_string(), head).await {
        Ok(a) => (a.status, a.head, a.body),
        Err(e) => panic!("no complete answer to {head:?}: {e}"),
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    send(addr, &format!("GET {path} HTTP/1.1")).await
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_follow_the_daemons_calls() {
    let server = start().await;
    let m = &server.metrics;
    m.set_leader(true);
    let redis = m.service("redis");
    redis.set_endpoints(2, 2);
    let node = redis.target("node-01");
    node.transition(Health::Up);
    node.probe(&ProbeOutcome::up(Duration::from_micros(300)));

    let scrape = "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0";
    let (status, headers, body) = send(server.addr, scrape).await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: application/openmetrics-text; version=1.0.0"));
    assert!(body.ends_with("# EOF\n"));
    let up = r#"epcheck_target_up{service="redis",target="node-01"}"#;
    let to_down = r#"epcheck_target_transitions_total{service="redis",target="node-01",to="down"}"#;
    assert_eq!(sample(&body, up), Some(1.0));
    assert_eq!(sample(&body, to_down), Some(0.0));
    assert_eq!(sample(&body, "epcheck_leader"), Some(1.0));
    let version = env!("CARGO_PKG_VERSION");
    let build = format!("epcheck_build_info{{version=\"{version}\"}}");
    assert_eq!(sample(&body, &build), Some(1.0));

    node.transition(Health::Down);
    let refused = ProbeError::new(FailureKind::Refused, "connection refused");
    node.probe(&ProbeOutcome::down(Duration::from_millis(2), refused));
    redis.set_endpoints(1, 2);
    redis.reconciled(
        k8s_endpoints::ReconcileAction::Updated,
        UNIX_EPOCH + Duration::from_secs(1_000),
    );
    redis.reconcile_failed();
    m.apiserver_observer()
        .on_request("PUT", Some(200), Duration::from_millis(5));
    m.apiserver_observer()
        .on_request("GET", None, Duration::from_secs(3));
    m.store_error();
    m.set_failsafe_active(true);
    m.notification(Channel::Webhook, Delivery::Failed);

    let (_, _, body) = send(server.addr, scrape).await;
    assert_eq!(sample(&body, up), Some(0.0));
    assert_eq!(sample(&body, to_down), Some(1.0));
    let checks = [
        (r#"epcheck_probes_total{service="redis",result="up"}"#, 1.0),
        (
            r#"epcheck_probes_total{service="redis",result="refused"}"#,
            1.0,
        ),
        (
            r#"epcheck_probes_total{service="redis",result="timeout"}"#,
            0.0,
        ),
        (
            r#"epcheck_probe_duration_seconds_count{service="redis"}"#,
            2.0,
        ),
        (
            r#"epcheck_probe_duration_seconds_bucket{le="0.0005",service="redis"}"#,
            1.0,
        ),
        (r#"epcheck_service_ready_endpoints{service="redis"}"#, 1.0),
        (
            r#"epcheck_service_configured_endpoints{service="redis"}"#,
            2.0,
        ),
        (
            r#"epcheck_endpoint_writes_total{service="redis",result="updated"}"#,
            1.0,
        ),
        (
            r#"epcheck_endpoint_writes_total{service="redis",result="failed"}"#,
            1.0,
        ),
        (
            r#"epcheck_last_reconcile_timestamp_seconds{service="redis"}"#,
            1000.0,
        ),
        (
            r#"epcheck_apiserver_requests_total{verb="PUT",code="200"}"#,
            1.0,
        ),
        (
            r#"epcheck_apiserver_requests_total{verb="GET",code="error"}"#,
            1.0,
        ),
        (
            r#"epcheck_apiserver_request_duration_seconds_count{verb="GET"}"#,
            1.0,
        ),
        ("epcheck_store_errors_total", 1.0),
        ("epcheck_failsafe_active", 1.0),
        (
            r#"epcheck_notifications_total{channel="webhook",result="failed"}"#,
            1.0,
        ),
    ];
    for (series, want) in checks {
        assert_eq!(sample(&body, series), Some(want), "{series} in\n{body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn other_scrapers_get_the_prometheus_text_format() {
    let server = start().await;
    server.metrics.service("redis").target("node-01");
    let heads = [
        "GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4",
        "GET /metrics HTTP/1.1\r\nAccept: */*",
        "GET /metrics HTTP/1.1",
    ];
    for head in heads {
        let (status, headers, body) = send(server.addr, head).await;
        assert_eq!(status, 200);
        assert!(
            headers.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("# TYPE epcheck_probes_total counter\n"));
        assert!(!body.contains("# EOF") && !body.contains("# UNIT"));
    }
    server.stop().await;
}

#[tokio::test]
async fn readyz_opens_with_the_latch_and_healthz_is_always_ok() {
    let server = start().await;
    assert_eq!(get(server.addr, "/healthz").await.0, 200);
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("first probe cycle not done"), "{body}");
    server.readiness.set_config_loaded();
    server.readiness.set_first_cycle_done();
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: ApiServer not reached yet\n")
    );
    server.readiness.set_apiserver_ok();
    let (status, _, body) = get(server.addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop().await;
}

#[tokio::test]
async fn status_is_the_snapshot_as_json() {
    let server = start().await;
    let (status, headers, body) = get(server.addr, "/status?pretty").await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["leader"], "epcheck-a");
    assert_eq!(v["is_leader"], true);
    let svc = &v["services"][0];
    assert_eq!(
        (svc["ready"].as_u64(), svc["configured"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(svc["last_reconcile"], "2026-01-02T03:04:05.000Z");
    let t = &svc["targets"][0];
    assert_eq!(t["state"], "up");
    assert_eq!(t["port"], 38080);
    assert_eq!(t["last_probe"], "1970-01-01T00:00:01.500Z");
    assert!(t["last_error"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_bad_methods_and_garbage() {
    let server = start().await;
    assert_eq!(get(server.addr, "/nope").await.0, 404);
    assert_eq!(send(server.addr, "POST /nope HTTP/1.1").await.0, 404);
    let (status, headers, _) = send(server.addr, "DELETE /metrics HTTP/1.1").await;
    assert_eq!(status, 405);
    assert!(headers.contains("allow: get, head"));
    let (status, headers, body) = send(server.addr, "HEAD /healthz HTTP/1.1").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(headers.contains("content-length: 3"));
    // A malformed request gets a 400 (or a closed connection), and the server keeps serving.
    let (status, _, _) = send(server.addr, "\x00\x01 garbage").await;
    assert!(status == 400 || status == 0, "{status}");
    let long = format!("GET /{} HTTP/1.1", "a".repeat(40_000));
    let (status, _, _) = send(server.addr, &long).await;
    assert!(status >= 400 || status == 0, "{status}");
    assert_eq!(get(server.addr, "/healthz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_returns_despite_an_idle_keepalive_connection() {
    let server = start().await;
    let mut idle = match TcpStream::connect(server.addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    let _ = idle
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf)).await;
    let addr = server.addr;
    server.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

/// `promtool check metrics` on real scrapes, in both formats (SPEC §8.1: promtool clean).
#[tokio::test]
async fn promtool_accepts_a_real_scrape() {
    let available = Command::new("promtool").arg("--version").output().is_ok();
    if !available {
        eprintln!("promtool not installed: skipping (apt-get install -y prometheus)");
        return;
    }
    let server = start().await;
    let m = &server.metrics;
    let redis = m.service("redis");
    redis.target("node-01").transition(Health::Up);
    redis.probe(&ProbeOutcome::up(Duration::from_micros(120)));
    redis.reconciled(k8s_endpoints::ReconcileAction::Unchanged, UNIX_EPOCH);
    m.apiserver_observer()
        .on_request("GET", Some(200), Duration::from_millis(3));
    m.notification(Channel::Script, Delivery::Sent);
    // promtool 2.x reads the Prometheus text format (what curl gets). Prometheus itself is
    // served OpenMetrics, whose counter families promtool would call "no help text".
    for head in [
        "GET /metrics HTTP/1.1",
        "GET /metrics HTTP/1.1\r\nAccept: text/plain",
    ] {
        let (status, _, body) = send(server.addr, head).await;
        assert_eq!(status, 200);
        let (ok, report) = promtool_check(&body);
        assert!(
            ok,
            "promtool check metrics ({head:?}):\n{report}\n--- scrape ---\n{body}"
        );
    }
    server.stop().await;
}

/// Every `epcheck_*` name that the shipped alert rules use is a family (or a histogram's
/// series) of a real scrape, so renaming a metric cannot silently break an alert.
#[tokio::test]
async fn alert_rules_use_only_exported_names() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus/alerts.yaml"
    );
    let rules = match std::fs::read_to_string(path) {
        Ok(r) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let server = start().await;
    server.metrics.service("redis").target("node-01");
    // Families without a series are not listed: give the ApiServer one a series.
    server
        .metrics
        .apiserver_observer()
        .on_request("GET", Some(200), Duration::from_millis(1));
    let (_, _, scrape) = get(server.addr, "/metrics").await;
    let exported: Vec<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let mut used: Vec<&str> = rules
        .match_indices("epcheck_")
        .map(|(i, _)| {
            let rest = &rules[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(&name) || exported.contains(&base),
            "alerts.yaml uses {name}, which /metrics does not export"
        );
    }
    server.stop().await;
}

fn promtool_check(scrape: &str) -> (bool, String) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (false, format!("spawn promtool: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(scrape.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("promtool: {e}")),
    }
}

/// Connects to `addr` and sends nothing.
async fn silent(addr: SocketAddr) -> TcpStream {
    match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect {addr}: {e}"),
    }
}

/// Issue 18: clients that open connections and send nothing filled the cap, and `/healthz` got an
/// empty reply (a liveness probe failure, so a restart). The oldest connection now makes room.
#[tokio::test]
async fn silent_connections_at_the_cap_do_not_starve_healthz() {
    let server = start().await;
    let mut silent_ones = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 8 {
        silent_ones.push(silent(server.addr).await);
    }
    for _ in 0..3 {
        let (status, _, body) = get(server.addr, "/healthz").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
    // The oldest silent connections were closed to make room: they read end-of-file.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), silent_ones[0].read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    server.stop().await;
}

/// A connection that sends no request head within the deadline is closed.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = HttpState::new(
        Arc::new(Registry::default()),
        Readiness::new(),
        Arc::new(snapshot),
    );
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(listener, state, limits, async {
        let _ = rx.await;
    }));
    let started = std::time::Instant::now();
    let mut idle = silent(addr).await;
    // A slow client that sends a few bytes of a head and then stops is closed too.
    let mut slow = silent(addr).await;
    slow.write_all(b"GET /hea").await.unwrap();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let read =
        tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut Vec::new())).await;
    assert!(read.is_ok(), "the slow client's connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
