//! `mode: endpointslice` against the real ApiServer and its controllers: slices accepted with
//! the right labels and owner references, the 100-endpoint split, IPv6, garbage collection when
//! the Service goes, no perpetual writes, and a Service that was in Endpoints mode before.

use std::time::Duration;

use serde_json::Value;

use super::{
    Backends, NET4, NET6, Scratch, Svc, endpoint_ips, endpoints_path, epcheck_events, eventually,
    get, managers, namespace, routed, service, slice_view, slices_of,
};

const NS: &str = "slices";

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn slices_are_accepted_split_owned_and_collected() {
    namespace(NS).await;
    let big = service(NS, "big", &[("serve", 8080)]).await;
    service(NS, "six", &[("serve", 8080)]).await;
    let backends = Backends::default();
    // 120 IPv4 backends, every tenth down; three IPv6 backends, one down.
    let v4: Vec<String> = (100..220).map(|n| format!("{NET4}{n}")).collect();
    let (mut up4, mut down4) = (Vec::new(), Vec::new());
    for (i, ip) in v4.iter().enumerate() {
        if i % 10 == 0 {
            down4.push(ip.clone());
        } else {
            backends.up(ip, 18080).await;
            up4.push(ip.clone());
        }
    }
    backends.up(NET6[0], 18080).await;
    backends.up(NET6[1], 18080).await;
    let s = Scratch::new();
    let cfg = s.config(
        "c.yaml",
        "content_type: application/json\nmode: endpointslice",
        &[
            Svc {
                key: "big",
                namespace: NS,
                name: "big",
                port: 18080,
                ips: v4.clone(),
            },
            Svc {
                key: "six",
                namespace: NS,
                name: "six",
                port: 18080,
                ips: NET6.iter().map(|s| s.to_string()).collect(),
            },
        ],
    );
    s.apply_manifests(&cfg).await;
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "created", "{}", r.stdout);
    assert_eq!(v["services"][1]["action"], "created", "{}", r.stdout);

    let slices = slices_of(NS, "big").await;
    let mut sizes: Vec<usize> = slices
        .iter()
        .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [20, 100], "the 100-endpoint split");
    for s in &slices {
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "epcheck.io"
        );
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "big");
        let owner = &s["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Service");
        assert_eq!(owner["apiVersion"], "v1");
        assert_eq!(owner["name"], "big");
        assert_eq!(owner["uid"], big["metadata"]["uid"], "owner uid");
        assert_eq!(s["ports"][0]["name"], "serve");
        assert_eq!(s["ports"][0]["port"], 8080);
    }
    assert_eq!(
        slice_view(&slices),
        (sorted(up4.clone()), sorted(down4.clone()))
    );
    let six = slices_of(NS, "six").await;
    assert_eq!(six.len(), 1);
    assert_eq!(six[0]["addressType"], "IPv6");
    assert_eq!(
        slice_view(&six),
        (
            sorted(vec![NET6[0].into(), NET6[1].into()]),
            vec![NET6[2].to_string()]
        )
    );
    // Slice mode writes no Endpoints object of its own.
    assert!(get(&endpoints_path(NS, "big")).await.is_null());

    // Nothing changed: nothing written.
    let mark = super::audit().len();
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "unchanged", "{}", r.stdout);
    assert_eq!(v["services"][1]["action"], "unchanged", "{}", r.stdout);
    let writes: Vec<_> = epcheck_events(mark, NS)
        .into_iter()
        .filter(|e| e.is_write())
        .collect();
    assert!(writes.is_empty(), "perpetual writes: {writes:#?}");

    // The Service goes: the garbage collector removes the slices it owned.
    super::send(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}/services/big"),
        &Value::Null,
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the garbage collector removes the slices",
        || async { slices_of(NS, "big").await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn a_service_moved_from_endpoints_mode_shows_only_healthy_backends() {
    let ns = "slices-moved";
    let ips: Vec<String> = (81..=83).map(|n| format!("{NET4}{n}")).collect();
    let TwoModes {
        backends,
        s,
        in_endpoints,
        in_slices,
    } = two_modes(ns, "moved", &ips).await;
    s.apply_manifests(&in_endpoints).await;
    let (_, r) = s.once(&in_endpoints).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let healthy = (vec![ips[0].clone(), ips[1].clone()], vec![ips[2].clone()]);
    eventually(
        Duration::from_secs(20),
        "the controller mirrors the Endpoints",
        || async { (slice_view(&slices_of(ns, "moved").await) == healthy).then_some(()) },
    )
    .await;

    // Now slice mode (deployed with its own manifests), with a backend down meanwhile.
    s.apply_manifests(&in_slices).await;
    backends.down(&ips[1], 18080).await;
    let (_, r) = s.once(&in_slices).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let healthy = (vec![ips[0].clone()], vec![ips[1].clone(), ips[2].clone()]);
    // The old Endpoints object is marked skip-mirror (so the controller drops its mirror) and
    // kept equal to the healthy set for readers of v1 Endpoints.
    let obj = get(&endpoints_path(ns, "moved")).await;
    assert_eq!(
        obj["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true",
        "{obj:#}"
    );
    assert_eq!(
        endpoint_ips(&obj),
        healthy,
        "the v1 Endpoints object was left stale"
    );
    // What kube-proxy reads: exactly the healthy set, from epcheck's slices only.
    eventually(
        Duration::from_secs(20),
        "only epcheck's slices, equal to the healthy set",
        || async {
            let slices = slices_of(ns, "moved").await;
            let ours = slices.iter().all(|s| {
                s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "epcheck.io"
            });
            (ours && slice_view(&slices) == healthy).then_some(())
        },
    )
    .await;
}

/// Slice mode → Endpoints mode → slice mode, a backend going down and another coming up in
/// between, with the real mirroring controller (SPEC §9, issue 20): after every run, what
/// kube-proxy reads is exactly the healthy backends as ready; back in Endpoints mode the
/// skip-mirror label goes and epcheck's slices are deleted at the next run after the mirror
/// shows the healthy set; back in slice mode the mirror's slices go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn a_service_switched_between_modes_shows_only_healthy_backends_after_every_run() {
    let ns = "modes";
    let ips: Vec<String> = (231..=233).map(|n| format!("{NET4}{n}")).collect();
    let TwoModes {
        backends,
        s,
        in_endpoints,
        in_slices,
    } = two_modes(ns, "flip", &ips).await;
    let mirror = "endpointslicemirroring-controller.k8s.io";

    // 1. Slice mode.
    s.apply_manifests(&in_slices).await;
    let (_, r) = s.once(&in_slices).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let healthy = (vec![ips[0].clone(), ips[1].clone()], vec![ips[2].clone()]);
    let slices = slices_of(ns, "flip").await;
    assert_eq!(routed(&slices), healthy, "{slices:#?}");
    assert_eq!(managers(&slices), ["epcheck.io"]);

    // 2. A backend goes down; the Service goes back to Endpoints mode, redeployed with its
    // manifests (whose Role replaces slice mode's).
    backends.down(&ips[1], 18080).await;
    s.apply_manifests(&in_endpoints).await;
    let mark = super::audit().len();
    let (v, r) = s.once(&in_endpoints).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "created", "{}", r.stdout);
    let writes: Vec<(String, String, String)> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write())
        .map(|e| (e.verb, e.resource, e.name))
        .collect();
    let slice = |verb: &str| {
        (
            verb.to_string(),
            "endpointslices".to_string(),
            "flip-epcheck-ipv4-0".to_string(),
        )
    };
    assert_eq!(
        writes[..2],
        [
            slice("update"),
            (
                "update".to_string(),
                "endpoints".to_string(),
                "flip".to_string()
            )
        ],
        "the slice is made current first, then the Endpoints object is written: {writes:#?}"
    );
    // If the mirroring controller was quick, epcheck's slice is already gone.
    assert!(
        writes[2..].is_empty() || writes[2..] == [slice("delete")],
        "{writes:#?}"
    );
    let healthy = (vec![ips[0].clone()], vec![ips[1].clone(), ips[2].clone()]);
    let slices = slices_of(ns, "flip").await;
    assert_eq!(
        routed(&slices),
        healthy,
        "epcheck's slices are made current before the hand-over: {slices:#?}"
    );
    let obj = get(&endpoints_path(ns, "flip")).await;
    assert!(
        obj["metadata"]["labels"]
            .get("endpointslice.kubernetes.io/skip-mirror")
            .is_none(),
        "{obj:#}"
    );
    assert_eq!(endpoint_ips(&obj), healthy);
    // The mirroring controller mirrors the Endpoints object; meanwhile both kinds of slices
    // show the healthy set.
    eventually(
        Duration::from_secs(20),
        "the controller mirrors the Endpoints object",
        || async {
            let slices = slices_of(ns, "flip").await;
            assert_eq!(routed(&slices), healthy, "{slices:#?}");
            managers(&slices)
                .contains(&mirror.to_string())
                .then_some(())
        },
    )
    .await;
    // The next run (a resync, for the daemon) hands over: only the mirror's slices remain.
    let mark = super::audit().len();
    let (v, r) = s.once(&in_endpoints).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "unchanged", "{}", r.stdout);
    let slices = slices_of(ns, "flip").await;
    assert_eq!(managers(&slices), [mirror], "{slices:#?}");
    assert_eq!(routed(&slices), healthy, "{slices:#?}");
    let writes: Vec<(String, String, String)> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write())
        .map(|e| (e.verb, e.resource, e.name))
        .collect();
    assert!(
        writes.is_empty() || writes == [slice("delete")],
        "{writes:#?}"
    );
    // Handed over: nothing more is written.
    let mark = super::audit().len();
    let (_, r) = s.once(&in_endpoints).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let writes: Vec<_> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write())
        .collect();
    assert!(writes.is_empty(), "writes after the hand-over: {writes:#?}");

    // 3. Another backend comes up; slice mode again.
    backends.up(&ips[2], 18080).await;
    s.apply_manifests(&in_slices).await;
    let (_, r) = s.once(&in_slices).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let healthy = (vec![ips[0].clone(), ips[2].clone()], vec![ips[1].clone()]);
    let obj = get(&endpoints_path(ns, "flip")).await;
    assert_eq!(
        obj["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true",
        "{obj:#}"
    );
    assert_eq!(endpoint_ips(&obj), healthy);
    // epcheck's slices are written before the mirror's go: healthy at every look.
    eventually(
        Duration::from_secs(20),
        "only epcheck's slices, equal to the healthy set",
        || async {
            let slices = slices_of(ns, "flip").await;
            assert_eq!(routed(&slices), healthy, "{slices:#?}");
            (managers(&slices) == ["epcheck.io"]).then_some(())
        },
    )
    .await;
}

/// A Service `svc` in namespace `ns` with backends `ips` (the first two listening) and two
/// configs for it, one per mode; no manifests applied yet (each mode's are applied before it
/// runs, as a user redeploying would).
struct TwoModes {
    backends: Backends,
    s: Scratch,
    in_endpoints: String,
    in_slices: String,
}

async fn two_modes(ns: &str, svc: &str, ips: &[String]) -> TwoModes {
    namespace(ns).await;
    service(ns, svc, &[("serve", 8080)]).await;
    let backends = Backends::default();
    backends.up(&ips[0], 18080).await;
    backends.up(&ips[1], 18080).await;
    let s = Scratch::new();
    let one = || Svc {
        key: svc,
        namespace: ns,
        name: svc,
        port: 18080,
        ips: ips.to_vec(),
    };
    let in_endpoints = s.config("endpoints.yaml", "content_type: application/json", &[one()]);
    let in_slices = s.config(
        "slices.yaml",
        "content_type: application/json\nmode: endpointslice",
        &[one()],
    );
    TwoModes {
        backends,
        s,
        in_endpoints,
        in_slices,
    }
}
