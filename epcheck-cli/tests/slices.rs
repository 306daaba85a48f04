//! `mode: endpointslice` through the real binary.

use fixtures::apiserver::{ApiServer, Permissions, Resource};
use fixtures::targets::ToggleTarget;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::util::{Epcheck, web_config};

const TOKEN: &str = "slices-test-token";

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
    api.put_service("default", "web");
    let targets = ToggleTarget::start_group(3).await.unwrap();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    Setup { api, e, targets }
}

fn config(s: &Setup, mode: &str) -> String {
    let top = format!(
        "interval: 500\npingtimeout: 300\nurl: {}\ntoken_file: token\nmode: {mode}\nmetrics: {{listen: off}}\n",
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
}
