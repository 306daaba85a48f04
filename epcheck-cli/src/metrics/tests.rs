//! Unit tests of the metric handles, read back through the text encoder.

use super::*;
use probe_core::ProbeError;
use prometheus_client::encoding::text::encode;

fn scrape(m: &Metrics) -> String {
    let mut registry = Registry::default();
    m.register(&mut registry);
    let mut out = String::new();
    assert!(encode(&mut out, &registry).is_ok());
    out
}

fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_failure_kind_is_counted_under_its_own_name() {
    assert_eq!(FailureKind::ALL.last(), Some(&FailureKind::Other));
    let m = Metrics::new();
    let svc = m.service("redis");
    for (i, kind) in FailureKind::ALL.into_iter().enumerate() {
        for _ in 0..=i {
            svc.probe(&ProbeOutcome::down(
                Duration::from_millis(1),
                ProbeError::new(kind, "x"),
            ));
        }
    }
    let out = scrape(&m);
    for (i, kind) in FailureKind::ALL.into_iter().enumerate() {
        let series = format!("epcheck_probes_total{{service=\"redis\",result=\"{kind}\"}}");
        assert_eq!(value(&out, &series), Some((i + 1) as f64), "{series}");
    }
    let up = r#"epcheck_probes_total{service="redis",result="up"}"#;
    assert_eq!(value(&out, up), Some(0.0));
}

#[test]
fn handles_for_the_same_names_share_series() {
    let m = Metrics::new();
    m.target("redis", "node-01").transition(Health::Up);
    let again = m.service("redis").target("node-01");
    again.transition(Health::Up);
    again.transition(Health::Unknown);
    let out = scrape(&m);
    let to_up = r#"epcheck_target_transitions_total{service="redis",target="node-01",to="up"}"#;
    assert_eq!(value(&out, to_up), Some(2.0));
    let up = r#"epcheck_target_up{service="redis",target="node-01"}"#;
    assert_eq!(value(&out, up), Some(0.0));
    assert!(!out.contains(r#"to="unknown""#));
}

#[test]
fn unchanged_reconciles_set_the_timestamp_but_count_no_write() {
    let m = Metrics::new();
    let svc = m.service("web");
    let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    svc.reconciled(k8s_endpoints::ReconcileAction::Unchanged, at);
    svc.reconciled(k8s_endpoints::ReconcileAction::Created, at);
    let out = scrape(&m);
    let ts = r#"epcheck_last_reconcile_timestamp_seconds{service="web"}"#;
    assert_eq!(value(&out, ts), Some(1_700_000_000.25));
    let w = |r: &str| format!("epcheck_endpoint_writes_total{{service=\"web\",result=\"{r}\"}}");
    assert_eq!(value(&out, &w("created")), Some(1.0));
    assert_eq!(value(&out, &w("updated")), Some(0.0));
    assert_eq!(value(&out, &w("failed")), Some(0.0));
    assert!(!out.contains(r#"result="unchanged""#));
}

#[test]
fn apiserver_observer_labels_verbs_and_codes() {
    let m = Metrics::new();
    let obs = m.apiserver_observer();
    obs.on_request("PUT", Some(409), Duration::from_millis(4));
    obs.on_request("PUT", Some(409), Duration::from_millis(4));
    obs.on_request("OPTIONS", None, Duration::from_secs(40));
    assert!(matches!(static_verb("GET"), Cow::Borrowed("GET")));
    let out = scrape(&m);
    let put = r#"epcheck_apiserver_requests_total{verb="PUT",code="409"}"#;
    assert_eq!(value(&out, put), Some(2.0));
    let other = r#"epcheck_apiserver_requests_total{verb="OPTIONS",code="error"}"#;
    assert_eq!(value(&out, other), Some(1.0));
    let inf = r#"epcheck_apiserver_request_duration_seconds_bucket{le="+Inf",verb="OPTIONS"}"#;
    assert_eq!(value(&out, inf), Some(1.0));
}

#[test]
fn process_wide_gauges_start_at_zero_except_build_info() {
    let m = Metrics::new();
    let out = scrape(&m);
    assert_eq!(value(&out, "epcheck_leader"), Some(0.0));
    assert_eq!(value(&out, "epcheck_failsafe_active"), Some(0.0));
    assert_eq!(value(&out, "epcheck_store_errors_total"), Some(0.0));
    m.set_leader(true);
    m.set_failsafe_active(true);
    m.set_failsafe_active(false);
    let out = scrape(&m);
    assert_eq!(value(&out, "epcheck_leader"), Some(1.0));
    assert_eq!(value(&out, "epcheck_failsafe_active"), Some(0.0));
}
