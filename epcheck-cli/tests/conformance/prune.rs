//! Objects of a Service removed from the config, and two epcheck instances in one namespace,
//! against the real server and its mirroring controller (SPEC §9, issue 20). After every step,
//! what kube-proxy reads — every slice labelled `kubernetes.io/service-name` — is checked.

use std::time::Duration;

use serde_json::Value;

use super::{
    Backends, Daemon, NET4, Scratch, Svc, endpoint_ips, endpoints_path, epcheck_events, eventually,
    get, managers, namespace, routed, service, slices_of,
};

const MIRROR: &str = "endpointslicemirroring-controller.k8s.io";

fn instance(obj: &Value) -> Option<&str> {
    obj["metadata"]["labels"]["epcheck.io/instance"].as_str()
}

/// epcheck's writes to objects of Service `svc` in `ns` since audit position `mark`.
fn writes_to(mark: usize, ns: &str, svc: &str) -> Vec<(String, String, String)> {
    epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write() && (e.name == svc || e.name.starts_with(&format!("{svc}-"))))
        .map(|e| (e.verb, e.resource, e.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn a_removed_service_is_left_alone_until_pruned_then_mirrored() {
    let ns = "prune";
    namespace(ns).await;
    for svc in ["keep", "gone"] {
        service(ns, svc, &[("serve", 8080)]).await;
    }
    let ips: Vec<String> = (244..=246).map(|n| format!("{NET4}{n}")).collect();
    let backends = Backends::default();
    backends.up(&ips[0], 18080).await;
    backends.up(&ips[1], 18080).await;
    let healthy = (vec![ips[0].clone(), ips[1].clone()], vec![ips[2].clone()]);
    let s = Scratch::new();
    let svc = |name| Svc {
        key: name,
        namespace: ns,
        name,
        port: 18080,
        ips: ips.clone(),
    };
    let json = "content_type: application/json\n";

    // 1. Both Services, first in Endpoints mode, then in slice mode: `gone` has an Endpoints
    // object labelled skip-mirror and epcheck's slice.
    for (file, extra) in [("ep.yaml", ""), ("sl.yaml", "mode: endpointslice\n")] {
        let cfg = s.config(file, &format!("{json}{extra}"), &[svc("keep"), svc("gone")]);
        s.apply_manifests(&cfg).await;
        let (_, r) = s.once(&cfg).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    for name in ["keep", "gone"] {
        eventually(
            Duration::from_secs(20),
            "only epcheck's slices, the healthy set",
            || async {
                let slices = slices_of(ns, name).await;
                assert_eq!(routed(&slices), healthy, "{slices:#?}");
                (managers(&slices) == ["epcheck.io"]).then_some(())
            },
        )
        .await;
    }

    // 2. `gone` leaves the config. The daemon names its two objects once and writes nothing
    // to them, resync after resync.
    let keep_only = s.config(
        "keep.yaml",
        &format!("{json}mode: endpointslice\nresync_interval: 1000\n"),
        &[svc("keep")],
    );
    s.apply_manifests(&keep_only).await;
    let before = (
        slices_of(ns, "gone").await,
        get(&endpoints_path(ns, "gone")).await,
    );
    let mark = super::audit().len();
    let mut d = Daemon::epcheck(&s, &keep_only, &[]);
    let names = [
        "Endpoints prune/gone (Service gone)",
        "EndpointSlice prune/gone-epcheck-ipv4-0 (Service gone)",
    ];
    eventually(Duration::from_secs(10), "both objects named", || async {
        let log = d.log();
        names.iter().all(|n| log.contains(n)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(d.terminate().await, Some(0), "{}", d.log());
    let log = d.log();
    for name in names {
        assert_eq!(log.matches(name).count(), 1, "{name} once:\n{log}");
    }
    assert_eq!(writes_to(mark, ns, "gone"), [], "{log}");
    assert_eq!(
        (
            slices_of(ns, "gone").await,
            get(&endpoints_path(ns, "gone")).await
        ),
        before
    );

    // 3. With the Role of a config without `prune: true`, the Endpoints object cannot be
    // handed back (its name left the Role), so the slice is kept too: kube-proxy keeps
    // reading the healthy set, never nothing.
    let r =
        s.e.run_async(&["prune", "-f", &keep_only, "-o", "json"])
            .await;
    assert_eq!(r.code, 1, "{}", r.all());
    let report: Value = serde_json::from_str(&r.stdout).expect("json");
    let actions: Vec<(&str, &str)> = report["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("Endpoints", "failed"), ("EndpointSlice", "failed")],
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("prune: true"), "the hint: {}", r.stdout);
    assert_eq!(routed(&slices_of(ns, "gone").await), healthy);

    // 4. With `prune: true` (and its Role), the daemon hands `gone` back: the Endpoints object
    // keeps its addresses and loses epcheck's labels, the mirroring controller mirrors it,
    // and epcheck's slice is deleted; `keep` stays epcheck's.
    let keep_prune = s.config(
        "keep-prune.yaml",
        &format!("{json}mode: endpointslice\nresync_interval: 1000\nprune: true\n"),
        &[svc("keep")],
    );
    s.apply_manifests(&keep_prune).await;
    let mut d = Daemon::epcheck(&s, &keep_prune, &[]);
    eventually(
        Duration::from_secs(20),
        "gone handed back to the mirroring controller",
        || async {
            let slices = slices_of(ns, "gone").await;
            // Whatever the moment, kube-proxy reads the healthy set of the last write.
            assert_eq!(routed(&slices), healthy, "{slices:#?}");
            (managers(&slices) == [MIRROR]).then_some(())
        },
    )
    .await;
    assert_eq!(d.terminate().await, Some(0), "{}", d.log());
    let gone = get(&endpoints_path(ns, "gone")).await;
    let labels = gone["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        labels.keys().all(|k| !k.contains("epcheck")
            && !k.contains("skip-mirror")
            && k != "app.kubernetes.io/managed-by"),
        "{gone:#}"
    );
    assert_eq!(endpoint_ips(&gone), healthy);
    let keep = slices_of(ns, "keep").await;
    assert_eq!(managers(&keep), ["epcheck.io"]);
    assert_eq!(routed(&keep), healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn two_instances_in_one_namespace_never_touch_each_other() {
    let ns = "instances";
    namespace(ns).await;
    for svc in ["alpha", "beta"] {
        service(ns, svc, &[("serve", 8080)]).await;
    }
    let ips: Vec<String> = (247..=249).map(|n| format!("{NET4}{n}")).collect();
    let backends = Backends::default();
    backends.up(&ips[0], 18080).await;
    let healthy = (vec![ips[0].clone()], vec![ips[1].clone(), ips[2].clone()]);
    let s = Scratch::new();
    let svc = |name| Svc {
        key: name,
        namespace: ns,
        name,
        port: 18080,
        ips: ips.clone(),
    };
    // Team a keeps alpha in slice mode, team b keeps beta in Endpoints mode; each has its own
    // Role in the namespace.
    let a = s.config(
        "a.yaml",
        "content_type: application/json\nmode: endpointslice\ninstance: team-a\n",
        &[svc("alpha")],
    );
    let b = s.config(
        "b.yaml",
        "content_type: application/json\ninstance: team-b\n",
        &[svc("beta")],
    );
    for cfg in [&a, &b] {
        s.apply_manifests(cfg).await;
        let (_, r) = s.once(cfg).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let alpha = slices_of(ns, "alpha").await;
    assert_eq!(routed(&alpha), healthy);
    assert!(
        alpha.iter().all(|s| instance(s) == Some("team-a")),
        "{alpha:#?}"
    );
    assert_eq!(
        instance(&get(&endpoints_path(ns, "beta")).await),
        Some("team-b")
    );
    eventually(Duration::from_secs(20), "beta mirrored", || async {
        let slices = slices_of(ns, "beta").await;
        (managers(&slices) == [MIRROR] && routed(&slices) == healthy).then_some(())
    })
    .await;

    // Team b's config also names alpha: b refuses it, naming both instances, and writes
    // nothing to it.
    let b_both = s.config(
        "b-both.yaml",
        "content_type: application/json\ninstance: team-b\n",
        &[svc("alpha"), svc("beta")],
    );
    s.apply_manifests(&b_both).await;
    let mark = super::audit().len();
    let (_, r) = s.once(&b_both).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("belongs to epcheck instance \"team-a\""),
        "{}",
        r.all()
    );
    assert_eq!(writes_to(mark, ns, "alpha"), []);

    // Each instance's prune sees only its own objects: b without beta hands back beta and
    // never alpha; a finds nothing of its own to hand back.
    let b_alpha = s.config(
        "b-alpha.yaml",
        "content_type: application/json\ninstance: team-b\nprune: true\n",
        &[svc("alpha")],
    );
    s.apply_manifests(&b_alpha).await;
    let mark = super::audit().len();
    let r = s.e.run_async(&["prune", "-f", &b_alpha]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(writes_to(mark, ns, "alpha"), []);
    assert_eq!(instance(&get(&endpoints_path(ns, "beta")).await), None);
    let r = s.e.run_async(&["prune", "-f", &a]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("no object of epcheck instance \"team-a\""),
        "{}",
        r.stdout
    );
    let alpha_now = slices_of(ns, "alpha").await;
    assert_eq!(routed(&alpha_now), healthy);
    assert!(alpha_now.iter().all(|s| instance(s) == Some("team-a")));
}
