//! Objects of Services removed from the config, and two instances side by side, through the
//! real binary against the stand-in ApiServer.

use std::time::Duration;

use fixtures::apiserver::{ApiServer, Permissions, Resource, endpoint_ips};
use fixtures::targets::ToggleTarget;
use serde_json::Value;

use crate::daemon::{Daemon, http_get, sample};
use crate::util::Epcheck;

const TOKEN: &str = "prune-test-token";

struct Setup {
    api: ApiServer,
    e: Epcheck,
    targets: Vec<ToggleTarget>,
}

async fn setup() -> Setup {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    for svc in ["web", "old"] {
        api.put_service("default", svc);
    }
    let targets = ToggleTarget::start_group(2).await.unwrap();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    Setup { api, e, targets }
}

/// A config named `file` with the services `services` (namespace `default`, both targets
/// each) and the keys in `extra`.
fn config(s: &Setup, file: &str, services: &[&str], extra: &str) -> String {
    let mut info = String::new();
    let mut checks = String::new();
    for svc in services {
        info.push_str(&format!("  {svc}: {{namespace: default, name: {svc}}}\n"));
        checks.push_str(&format!(
            "  {svc}:\n    port: {}\n    iplist:\n",
            s.targets[0].addr().port()
        ));
        for (i, t) in s.targets.iter().enumerate() {
            checks.push_str(&format!("      - {{name: n{i}, ip: {}}}\n", t.addr().ip()));
        }
    }
    let metrics = if extra.contains("metrics:") {
        ""
    } else {
        "metrics: {listen: off}\n"
    };
    let text = format!(
        "interval: 300\npingtimeout: 300\nurl: {}\ntoken_file: token\n{metrics}{extra}\
service_info:\n{info}service_healthcheck_list:\n{checks}\
endpoint_template: {{kind: Endpoints, apiVersion: v1, subsets: [{{ports: [{{port: 8080}}]}}]}}\n",
        s.api.url()
    );
    let path = s.e.write(file, &text);
    path.to_str().unwrap().to_owned()
}

fn labels(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn instance(object: &Value) -> Option<String> {
    object["metadata"]["labels"]["epcheck.io/instance"]
        .as_str()
        .map(str::to_owned)
}

fn endpoints(api: &ApiServer, name: &str) -> Value {
    api.get_object(Resource::Endpoints, "default", name)
        .unwrap_or_else(|| panic!("no Endpoints {name}"))
}

/// The names of the slices labelled for `service`.
fn slices_of(api: &ApiServer, service: &str) -> Vec<String> {
    api.list_objects(Resource::EndpointSlices, Some("default"))
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` for up to 5 s.
async fn eventually(check: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// Plays the mirroring controller: a slice `<service>-mirror` with the ready and not-ready
/// addresses of the Endpoints object `endpoints`.
fn mirror(api: &ApiServer, service: &str, endpoints: &Value) {
    let endpoint = |ip: &String, ready: bool| serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}});
    let all: Vec<Value> = endpoint_ips(endpoints, "addresses")
        .iter()
        .map(|ip| endpoint(ip, true))
        .chain(
            endpoint_ips(endpoints, "notReadyAddresses")
                .iter()
                .map(|ip| endpoint(ip, false)),
        )
        .collect();
    api.insert_object(
        Resource::EndpointSlices,
        "default",
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-mirror"), "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": all,
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }),
    );
}

/// `web` and `old` written in Endpoints mode, then in slice mode (so `old` has an Endpoints
/// object labelled skip-mirror and a slice), all of instance `epcheck`.
async fn two_services_in_slice_mode(s: &Setup) {
    for mode in ["endpoints", "endpointslice"] {
        let cfg = config(
            s,
            &format!("both-{mode}.yaml"),
            &["web", "old"],
            &format!("mode: {mode}\n"),
        );
        let r = s.e.run_async(&["once", "-f", &cfg]).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    for svc in ["web", "old"] {
        assert_eq!(
            instance(&endpoints(&s.api, svc)).as_deref(),
            Some("epcheck")
        );
        assert_eq!(slices_of(&s.api, svc), [format!("{svc}-epcheck-ipv4-0")]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_service_is_reported_and_handed_back_only_when_asked() {
    let s = setup().await;
    two_services_in_slice_mode(&s).await;
    let only_web = config(
        &s,
        "web.yaml",
        &["web"],
        "mode: endpointslice\nresync_interval: 400\nmetrics: {listen: 127.0.0.1:0}\n",
    );
    let before = s
        .api
        .list_objects(Resource::EndpointSlices, Some("default"));
    let old_endpoints = endpoints(&s.api, "old");

    // The daemon names both objects once, counts them, and changes nothing.
    let d = Daemon::start(&s.e, &only_web);
    let addr = d.metrics_addr().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scrape = http_get(&addr, "/metrics").await.1;
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    for name in [
        "Endpoints default/old (Service old)",
        "EndpointSlice default/old-epcheck-ipv4-0 (Service old)",
    ] {
        assert_eq!(log.matches(name).count(), 1, "{name} once:\n{log}");
    }
    assert!(!log.contains("(Service web)"), "{log}");
    assert_eq!(
        sample(&scrape, "epcheck_unconfigured_objects"),
        Some(2.0),
        "{scrape}"
    );
    assert_eq!(
        s.api
            .list_objects(Resource::EndpointSlices, Some("default")),
        before
    );
    assert_eq!(endpoints(&s.api, "old"), old_endpoints);

    // A dry run lists them and changes nothing.
    let r =
        s.e.run_async(&["prune", "--dry-run", "-o", "json", "-f", &only_web])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let rows: Vec<(&str, &str, &str)> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
                o["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("Endpoints", "old", "would-release"),
            ("EndpointSlice", "old-epcheck-ipv4-0", "would-delete")
        ]
    );
    assert_eq!(endpoints(&s.api, "old"), old_endpoints);

    // prune hands them back: the Endpoints object keeps its addresses and loses epcheck's
    // labels, so the mirroring controller mirrors it again; epcheck's slice goes once the
    // mirror shows its ready endpoints (the stand-in has no controller: the test plays it).
    let pruning = {
        let cmd = s.e.cmd(&["prune", "-f", &only_web]);
        tokio::spawn(async move { tokio::process::Command::from(cmd).output().await })
    };
    assert!(
        eventually(|| instance(&endpoints(&s.api, "old")).is_none()).await,
        "the Endpoints object was not handed back"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        slices_of(&s.api, "old"),
        ["old-epcheck-ipv4-0"],
        "epcheck's slice must wait for the mirror"
    );
    mirror(&s.api, "old", &endpoints(&s.api, "old"));
    let r = crate::util::Run::from(pruning.await.unwrap().unwrap());
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("2 objects of epcheck instance \"epcheck\""),
        "{}",
        r.stdout
    );
    assert_eq!(slices_of(&s.api, "old"), ["old-mirror"]);
    let released = endpoints(&s.api, "old");
    assert_eq!(labels(&released), [], "{released}");
    assert_eq!(
        endpoint_ips(&released, "addresses"),
        endpoint_ips(&old_endpoints, "addresses")
    );
    // web is still epcheck's.
    assert_eq!(slices_of(&s.api, "web"), ["web-epcheck-ipv4-0"]);
    assert_eq!(
        instance(&endpoints(&s.api, "web")).as_deref(),
        Some("epcheck")
    );

    let r = s.e.run_async(&["prune", "-f", &only_web]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("no object of epcheck instance"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prune_on_the_daemon_hands_back_a_removed_service() {
    let s = setup().await;
    two_services_in_slice_mode(&s).await;
    let only_web = config(
        &s,
        "web.yaml",
        &["web"],
        "mode: endpointslice\nresync_interval: 400\nprune: true\n",
    );
    let d = Daemon::start(&s.e, &only_web);
    let released = eventually(|| instance(&endpoints(&s.api, "old")).is_none()).await;
    assert!(released, "{}", d.log());
    // Until the mirroring controller (played by the test) shows its endpoints, epcheck's
    // slice stays, resync after resync.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        slices_of(&s.api, "old"),
        ["old-epcheck-ipv4-0"],
        "{}",
        d.log()
    );
    mirror(&s.api, "old", &endpoints(&s.api, "old"));
    let done = eventually(|| slices_of(&s.api, "old") == ["old-mirror"]).await;
    let (code, _, log) = d.terminate().await;
    assert!(done, "{log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("pruned"), "{log}");
    assert_eq!(slices_of(&s.api, "web"), ["web-epcheck-ipv4-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_in_one_namespace_never_touch_each_other() {
    let s = setup().await;
    let a = config(&s, "a.yaml", &["web"], "instance: team-a\n");
    let r = s.e.run_async(&["once", "-f", &a]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let web = endpoints(&s.api, "web");
    assert_eq!(instance(&web).as_deref(), Some("team-a"));

    // Instance b is configured with web too: it refuses it, names both instances, and still
    // writes its own Service.
    let b = config(&s, "b.yaml", &["web", "old"], "instance: team-b\n");
    let r = s.e.run_async(&["once", "-f", &b]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("belongs to epcheck instance \"team-a\"")
            && r.all().contains("(\"team-b\")"),
        "{}",
        r.all()
    );
    assert_eq!(endpoints(&s.api, "web"), web);
    assert_eq!(
        instance(&endpoints(&s.api, "old")).as_deref(),
        Some("team-b")
    );

    // Each prune sees only its own instance's objects: a's config lacks old (b's), b's
    // lacks nothing of its own.
    for cfg in [&a, &b] {
        let r = s.e.run_async(&["prune", "-f", cfg]).await;
        assert_eq!(r.code, 0, "{}", r.all());
        assert!(
            r.stdout.contains("no object of epcheck instance"),
            "{}",
            r.stdout
        );
    }
    let old = endpoints(&s.api, "old");
    assert_eq!(instance(&old).as_deref(), Some("team-b"));
    // b without old: prune releases old and never web.
    let b_web = config(&s, "b-web.yaml", &["web"], "instance: team-b\n");
    let r = s.e.run_async(&["prune", "-f", &b_web]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(instance(&endpoints(&s.api, "old")), None);
    assert_eq!(endpoints(&s.api, "web"), web);
}
