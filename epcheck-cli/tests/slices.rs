//! `mode: endpointslice` through the real binary.

use std::time::{Duration, Instant};

use fixtures::apiserver::{ApiServer, ApiServerBuilder, Permissions, Resource};
use fixtures::targets::ToggleTarget;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::daemon::{Daemon, http_get, sample};
use crate::util::{Epcheck, web_config};

const TOKEN: &str = "slices-test-token";

struct Setup {
    api: ApiServer,
    e: Epcheck,
    targets: Vec<ToggleTarget>,
}

async fn setup() -> Setup {
    setup_with(ApiServer::builder()).await
}

async fn setup_with(builder: ApiServerBuilder) -> Setup {
    let api = builder.strict_ips(false).start().await.unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "web");
    let targets = ToggleTarget::start_group(3).await.unwrap();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    Setup { api, e, targets }
}

fn config(s: &Setup, mode: &str) -> String {
    config_with(s, mode, "metrics: {listen: off}\n")
}

/// The config of `mode` with more top-level keys.
fn config_with(s: &Setup, mode: &str, extra: &str) -> String {
    let top = format!(
        "interval: 500\npingtimeout: 300\nurl: {}\ntoken_file: token\nmode: {mode}\n{extra}",
        s.api.url()
    );
    let ips: Vec<String> = s
        .targets
        .iter()
        .map(|t| t.addr().ip().to_string())
        .collect();
    let path = s.e.write(
        &format!("{mode}.yaml"),
        &web_config(&top, s.targets[0].addr().port(), &ips),
    );
    path.to_str().unwrap().to_string()
}

fn slices(api: &ApiServer) -> Vec<EndpointSlice> {
    api.list_objects(Resource::EndpointSlices, Some("default"))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_slices_and_stops_mirroring_an_old_endpoints_object() {
    let mut s = setup().await;
    // First the original mode: an Endpoints object epcheck owns.
    let r =
        s.e.run_async(&["once", "-f", &config(&s, "endpoints")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        s.api
            .get_object(Resource::Endpoints, "default", "web")
            .is_some()
    );

    s.targets[2].refuse().await;
    let cfg = config(&s, "endpointslice");
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg, "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "created", "{}", r.stdout);
    let posts = s
        .api
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST" && w.path.contains("endpointslices"))
        .count();
    assert_eq!(posts, 1);

    let all = slices(&s.api);
    assert_eq!(all.len(), 1);
    let slice = &all[0];
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "epcheck.io"
    );
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Service", "web")
    );
    let ready: Vec<bool> = slice
        .endpoints
        .iter()
        .map(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .collect();
    assert_eq!(ready, [true, true, false]);

    // The Endpoints object from mode: endpoints is no longer mirrored.
    let ep = s
        .api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    assert_eq!(
        ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true",
        "{ep}"
    );

    // Unchanged: nothing written.
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg, "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        s.api.writes().is_empty(),
        "{:?}",
        s.api
            .writes()
            .iter()
            .map(|w| w.summary())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_slices_k8s_openapi_reads() {
    let s = setup().await;
    let r =
        s.e.run_async(&["plan", "-f", &config(&s, "endpointslice")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    use serde::Deserialize as _;
    let docs: Vec<EndpointSlice> = serde_yaml::Deserializer::from_str(&r.stdout)
        .map(|d| EndpointSlice::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{}", r.stdout);
    assert_eq!(docs[0].endpoints.len(), 3);
    // No Service is read, so there is no uid to own the slice: no owner reference with an
    // empty uid, and a comment that says why.
    assert_eq!(docs[0].metadata.owner_references, None, "{}", r.stdout);
    assert!(!r.stdout.contains("uid:"), "{}", r.stdout);
    assert!(
        r.stdout.contains(
            "# ownerReferences: added when epcheck writes the slice, naming Service default/web by its uid"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("# Service default/web needs one port without a name"),
        "{}",
        r.stdout
    );
}

/// Polls `check` every 20 ms for up to `within`.
async fn eventually(within: Duration, check: impl Fn() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

fn epcheck_slices(api: &ApiServer) -> Vec<EndpointSlice> {
    slices(api)
        .into_iter()
        .filter(|s| {
            s.metadata.labels.as_ref().and_then(|l| {
                l.get("endpointslice.kubernetes.io/managed-by")
                    .map(String::as_str)
            }) == Some("epcheck.io")
        })
        .collect()
}

/// A Service that gains a selector belongs to the cluster's controllers: the daemon deletes
/// its own slices (so kube-proxy stops routing to what it probed), says so once, shows it in
/// `epcheck_service_selector_owned`, writes nothing more for it, and manages it again once the
/// selector is gone (SPEC §9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_gains_a_selector_is_left_to_its_controllers() {
    let s = setup().await;
    let cfg = config_with(
        &s,
        "endpointslice",
        "resync_interval: 1000\nmetrics: {listen: 127.0.0.1:0}\n",
    );
    let d = Daemon::start(&s.e, &cfg);
    let addr = d.metrics_addr().await;
    let written = || epcheck_slices(&s.api).first().map(|s| s.endpoints.len()) == Some(3);
    assert!(
        eventually(Duration::from_secs(5), written).await,
        "{}",
        d.log()
    );

    s.api
        .put_service_with_selector("default", "web", [("app", "web")]);
    s.api.insert_object(
        Resource::EndpointSlices,
        "default",
        serde_json::json!({"metadata": {"name": "web-x7k2p", "labels": {
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": []}),
    );
    let gone = || epcheck_slices(&s.api).is_empty();
    assert!(
        eventually(Duration::from_secs(4), gone).await,
        "{}",
        d.log()
    );
    let owned = "epcheck_service_selector_owned{service=\"web\"}";
    let scrape = scrape_until(&addr, owned, 1.0).await;
    assert_eq!(sample(&scrape, owned), Some(1.0), "{scrape}");

    // Two more resyncs: nothing written, the controller's slice left alone, said once.
    s.api.clear_requests();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(s.api.writes().is_empty(), "{:?}", s.api.writes());
    assert!(
        s.api
            .requests()
            .iter()
            .any(|r| r.path.contains("/services/web")),
        "a resync looks again"
    );
    assert_eq!(slices(&s.api).len(), 1);
    let log = d.log();
    assert_eq!(
        log.matches("epcheck stopped managing this Service").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("deleted its own EndpointSlices for it (web-epcheck-ipv4-0)"),
        "{log}"
    );

    // The selector goes: epcheck manages the Service again.
    s.api.put_service("default", "web");
    assert!(
        eventually(Duration::from_secs(4), written).await,
        "{}",
        d.log()
    );
    let scrape = scrape_until(&addr, owned, 0.0).await;
    assert_eq!(sample(&scrape, owned), Some(0.0), "{scrape}");
    assert!(d.log().contains("epcheck manages it again"), "{}", d.log());
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

/// A server before 1.22 drops `serving` and `terminating`; the daemon compares only what it
/// keeps, so resyncs read but never write. A template port the Service does not name is warned
/// about once, not at every resync (SPEC §9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_server_sees_no_writes_in_steady_state() {
    let s = setup_with(ApiServer::builder().git_version("v1.21.14")).await;
    s.api.insert_object(
        Resource::Services,
        "default",
        serde_json::json!({"metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
    );
    let cfg = config_with(
        &s,
        "endpointslice",
        "resync_interval: 700\nmetrics: {listen: off}\n",
    );
    let d = Daemon::start(&s.e, &cfg);
    let written = || epcheck_slices(&s.api).first().map(|s| s.endpoints.len()) == Some(3);
    assert!(
        eventually(Duration::from_secs(5), written).await,
        "{}",
        d.log()
    );
    let stored = epcheck_slices(&s.api);
    let conditions = stored[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (conditions.ready, conditions.serving, conditions.terminating),
        (Some(true), None, None)
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    s.api.clear_requests();
    // Three resyncs.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let lists = s
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/endpointslices"))
        .count();
    assert!(lists >= 2, "resyncs read the slices ({lists})");
    assert!(
        s.api.writes().is_empty(),
        "{:?}",
        s.api
            .writes()
            .iter()
            .map(|w| w.summary())
            .collect::<Vec<_>>()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    let warning =
        "endpoint port (unnamed) matches no port of Service default/web (its ports: http)";
    assert_eq!(log.matches(warning).count(), 1, "{log}");
}

/// (ready, not ready) IPs over epcheck's slices, as kube-proxy would read them.
fn epcheck_slice_view(api: &ApiServer) -> (Vec<String>, Vec<String>) {
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for slice in epcheck_slices(api) {
        for ep in &slice.endpoints {
            let is_ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let to = if is_ready { &mut ready } else { &mut not_ready };
            to.extend(ep.addresses.iter().cloned());
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// A slice as the mirroring controller makes it from `web`'s Endpoints object.
fn mirrored_slice(ready: &[String], not_ready: &[String]) -> serde_json::Value {
    let endpoint = |ip: &String, ready: bool| serde_json::json!({"addresses": [ip], "conditions": {"ready": ready}});
    let endpoints: Vec<_> = ready
        .iter()
        .map(|ip| endpoint(ip, true))
        .chain(not_ready.iter().map(|ip| endpoint(ip, false)))
        .collect();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-mirror", "labels": {
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    })
}

/// Method and path (with the label selector of a list) of every request since the last clear,
/// but `GET /version`.
fn request_log(api: &ApiServer) -> Vec<String> {
    api.requests()
        .iter()
        .filter(|r| r.path != "/version")
        .map(|r| {
            let selector = r
                .query
                .as_deref()
                .filter(|_| r.path.ends_with("/endpointslices"))
                .map(|q| {
                    format!(
                        "?{}",
                        q.replace("%2F", "/")
                            .replace("%3D", "=")
                            .replace("%2C", ",")
                    )
                })
                .unwrap_or_default();
            format!("{} {}{selector}", r.method, r.path)
        })
        .collect()
}

/// Back from `mode: endpointslice` to `mode: endpoints` (SPEC §9): epcheck's slice is first
/// brought to the current health, then the Endpoints object is written without skip-mirror,
/// and epcheck's slice is deleted only once the mirroring controller's slice shows exactly the
/// healthy backends. Afterwards each run costs one list and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_in_endpoints_mode_epcheck_hands_its_slices_over_to_the_mirror() {
    let mut s = setup().await;
    let ips: Vec<String> = s
        .targets
        .iter()
        .map(|t| t.addr().ip().to_string())
        .collect();
    let r =
        s.e.run_async(&["once", "-f", &config(&s, "endpoints")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let r =
        s.e.run_async(&["once", "-f", &config(&s, "endpointslice")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(epcheck_slice_view(&s.api), (ips.clone(), vec![]));

    // A backend goes down, and the Service goes back to Endpoints mode.
    s.targets[1].refuse().await;
    let healthy = vec![ips[0].clone(), ips[2].clone()];
    let cfg = config(&s, "endpoints");
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg, "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let base = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let ep_path = "/api/v1/namespaces/default/endpoints/web";
    let svc_path = "/api/v1/namespaces/default/services/web";
    let all = format!("GET {base}?labelSelector=kubernetes.io/service-name=web");
    let own = format!(
        "GET {base}?labelSelector=kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=epcheck.io"
    );
    assert_eq!(
        request_log(&s.api),
        [
            all.clone(),
            format!("GET {svc_path}"),
            own.clone(),
            format!("PUT {base}/web-epcheck-ipv4-0"),
            format!("GET {svc_path}"),
            format!("GET {ep_path}"),
            format!("PUT {ep_path}"),
            all.clone(),
        ],
        "the slice is made current before the Endpoints write, and kept: no mirror yet"
    );
    assert_eq!(
        epcheck_slice_view(&s.api),
        (healthy.clone(), vec![ips[1].clone()])
    );
    let ep = s
        .api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    assert!(
        ep["metadata"]["labels"]
            .get("endpointslice.kubernetes.io/skip-mirror")
            .is_none(),
        "{ep}"
    );
    assert_eq!(fixtures::apiserver::endpoint_ips(&ep, "addresses"), healthy);

    // The mirror shows a stale view (it lags): epcheck's slice stays.
    s.api.insert_object(
        Resource::EndpointSlices,
        "default",
        mirrored_slice(&ips, &[]),
    );
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(epcheck_slices(&s.api).len(), 1);
    assert!(s.api.writes().is_empty(), "{:?}", request_log(&s.api));

    // The mirror shows the healthy set: epcheck's slice goes, after the Endpoints check.
    s.api
        .delete_object(Resource::EndpointSlices, "default", "web-mirror");
    s.api.insert_object(
        Resource::EndpointSlices,
        "default",
        mirrored_slice(&healthy, &[ips[1].clone()]),
    );
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let log = request_log(&s.api);
    assert_eq!(
        log.last().map(String::as_str),
        Some(format!("DELETE {base}/web-epcheck-ipv4-0").as_str()),
        "{log:#?}"
    );
    assert!(epcheck_slices(&s.api).is_empty());
    assert_eq!(slices(&s.api).len(), 1, "the mirror's slice stays");

    // Handed over: one list at start-up, no write.
    s.api.clear_requests();
    let r = s.e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        request_log(&s.api),
        [all, format!("GET {svc_path}"), format!("GET {ep_path}")]
    );
}

/// A Role made for Endpoints mode before this release has no endpointslice verbs: the
/// Endpoints object is still written, and the log says once what the hand-over needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_slice_rbac_the_endpoints_write_goes_on_and_says_what_is_needed() {
    let mut s = setup().await;
    let r =
        s.e.run_async(&["once", "-f", &config(&s, "endpointslice")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    s.api.remove_token(TOKEN);
    s.api
        .add_token(TOKEN, Permissions::epcheck("default", ["web"]));
    s.targets[1].refuse().await;
    s.api.clear_requests();
    let r =
        s.e.run_async(&["once", "-f", &config(&s, "endpoints")])
            .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let ep = s
        .api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    assert_eq!(
        fixtures::apiserver::endpoint_ips(&ep, "notReadyAddresses").len(),
        1
    );
    let needed = "a Role with list, update and delete on endpointslices";
    assert_eq!(r.stderr.matches(needed).count(), 1, "{}", r.stderr);
    assert_eq!(
        s.api
            .requests()
            .iter()
            .filter(|r| r.path.contains("endpointslices"))
            .count(),
        1,
        "one refused list, nothing more"
    );
}

/// A Service that never had slices costs one list at start-up, not one per reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_lists_slices_once_for_a_service_that_never_had_any() {
    let mut s = setup().await;
    let cfg = config_with(
        &s,
        "endpoints",
        "resync_interval: 500\nmetrics: {listen: off}\n",
    );
    let d = Daemon::start(&s.e, &cfg);
    let written = || {
        s.api
            .get_object(Resource::Endpoints, "default", "web")
            .is_some()
    };
    assert!(
        eventually(Duration::from_secs(5), written).await,
        "{}",
        d.log()
    );
    s.targets[0].refuse().await;
    let down = || {
        s.api
            .get_object(Resource::Endpoints, "default", "web")
            .is_some_and(|ep| {
                fixtures::apiserver::endpoint_ips(&ep, "notReadyAddresses").len() == 1
            })
    };
    assert!(
        eventually(Duration::from_secs(5), down).await,
        "{}",
        d.log()
    );
    // A few resyncs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lists = s
        .api
        .requests()
        .iter()
        .filter(|r| {
            r.path.ends_with("/endpointslices")
                && r.query
                    .as_deref()
                    .is_some_and(|q| q.contains("service-name"))
        })
        .count();
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(lists, 1, "{log}");
}

/// Scrapes `/metrics` until `series` has `value` (at most 4 s) and returns the last page: a
/// gauge is set when the daemon takes a reconcile's result, a moment after the stand-in saw
/// the requests.
async fn scrape_until(addr: &str, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let scrape = http_get(addr, "/metrics").await.1;
        if sample(&scrape, series) == Some(value) || Instant::now() >= deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
