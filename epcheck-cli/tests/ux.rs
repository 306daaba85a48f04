//! First run, tried as a new user would: messages that say each thing once, in plain words,
//! counted in good English, in a stable order.

use std::net::TcpListener;

use fixtures::targets::AcceptingTarget;

use crate::util::Epcheck;

/// A config with services `zeta` (namespace `b`), `alpha` (namespace `b`) and `mid` (namespace
/// `a`), in that order, each with one backend on `port`.
fn three_services(port: u16) -> String {
    let mut info = String::new();
    let mut checks = String::new();
    for (key, ns) in [("zeta", "b"), ("alpha", "b"), ("mid", "a")] {
        info.push_str(&format!("  {key}:\n    namespace: {ns}\n    name: {key}\n"));
        checks.push_str(&format!(
            "  {key}:\n    port: {port}\n    iplist:\n      - name: n1\n        ip: 127.0.0.1\n"
        ));
    }
    format!(
        "interval: 2000\npingtimeout: 500\nurl: https://127.0.0.1:6443\ntoken_file: default\n\
         endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints\n\
         service_info:\n{info}service_healthcheck_list:\n{checks}\
         endpoint_template:\n  kind: Endpoints\n  apiVersion: v1\n  metadata:\n    name: x\n    namespace: x\n  \
         subsets:\n    - ports:\n        - port: 8080\n"
    )
}

#[test]
fn a_missing_config_file_is_reported_once() {
    let e = Epcheck::new();
    let r = e.run(&["validate", "-f", "nope.yaml"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(
        r.all().matches("No such file or directory").count(),
        1,
        "{}",
        r.all()
    );
    assert!(r.all().contains("nope.yaml"), "{}", r.all());
}

#[test]
fn an_invalid_interval_gets_its_error_and_no_warning_made_from_a_default() {
    let e = Epcheck::new();
    let text = crate::util::seed().replace("interval: 2000", "interval: -5");
    let path = e.write("c.yaml", &text);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stdout.contains("interval: expected a whole number"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("shorter than pingtimeout"),
        "a warning computed from the default interval:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("invalid (1 error)"), "{}", r.stdout);
}

#[test]
fn counts_are_singular_and_plural() {
    let e = Epcheck::new();
    let one =
        "interval: 2000\npingtimeout: 500\nurl: https://127.0.0.1:6443\ntoken_file: default\n";
    let text = crate::util::web_config(one, 8080, &["198.51.100.10".into()]);
    let path = e.write("c.yaml", &text);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert!(
        r.stdout.contains("valid (1 service, 1 target, "),
        "{}",
        r.stdout
    );
    let r = e.run(&["validate", "-f", crate::util::seed_path().to_str().unwrap()]);
    assert!(
        r.stdout.contains("valid (3 services, 8 targets, "),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_services_sorted_by_namespace_then_name() {
    let up = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    let path = e.write("c.yaml", &three_services(up.addr().port()));
    let r = e
        .run_async(&["plan", "-f", path.to_str().unwrap(), "-o", "json"])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let order: Vec<(&str, &str)> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(order, [("a", "mid"), ("b", "alpha"), ("b", "zeta")]);
}

#[test]
fn probe_help_offers_no_config_file_and_says_so_when_given_one() {
    let e = Epcheck::new();
    let r = e.run(&["probe", "--help"]);
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains("--config"), "{}", r.stdout);
    // A script that passes -f to every command still works, with a warning, in plain text
    // (stderr is a pipe here: no colour codes).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let r = e.run(&["probe", "-f", "whatever.yaml", &addr]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("probe does not read a config file"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains('\x1b'),
        "colour codes on a pipe: {:?}",
        r.stderr
    );
}

#[test]
fn status_against_a_closed_redis_port_says_so_plainly() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let e = Epcheck::new();
    let text = crate::util::seed().replace("172.16.0.61:6379", &addr);
    assert!(
        text.contains(&addr),
        "the seed config's redis address moved"
    );
    let path = e.write("c.yaml", &text);
    let r = e.run(&["status", "-f", path.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    let err = r.stderr.clone();
    assert!(
        err.contains(&format!("cannot connect to Redis at {addr}")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    for internal in ["Os {", "kind:", "new_lazy", "within 3s"] {
        assert!(!err.contains(internal), "{internal:?} in: {err}");
    }
}
