//! The RBAC that `epcheck manifests` prints, applied through the real API: enough for what
//! epcheck does, and nothing outside it.

use serde_json::json;

use super::{Backends, NET4, Scratch, Svc, endpoints_path, namespace, plane, service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn the_emitted_rbac_is_enough_and_no_more() {
    let ns = "rbac";
    namespace(ns).await;
    service(ns, "web", &[("serve", 8080)]).await;
    service(ns, "other", &[("serve", 8080)]).await;
    let backends = Backends::default();
    let ip = format!("{NET4}51");
    backends.up(&ip, 18080).await;
    let s = Scratch::new();
    let cfg = s.config(
        "c.yaml",
        "content_type: application/json\nleader_election: {enabled: true, namespace: rbac}",
        &[Svc {
            key: "web",
            namespace: ns,
            name: "web",
            port: 18080,
            ips: vec![ip.clone(), format!("{NET4}52")],
        }],
    );
    s.apply_manifests(&cfg).await;

    // Everything epcheck does works with exactly that identity.
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "created", "{}", r.stdout);

    let me = plane().as_epcheck().expect("client");
    let allowed = [
        ("GET", endpoints_path(ns, "web")),
        ("GET", format!("/api/v1/namespaces/{ns}/services/web")),
        // Listing its instance's objects, to find those whose Service left the config.
        (
            "GET",
            format!(
                "/api/v1/namespaces/{ns}/endpoints?labelSelector=epcheck.io%2Finstance%3Depcheck"
            ),
        ),
    ];
    for (method, path) in allowed {
        let r = me
            .request(method, &path, None, Default::default())
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{method} {path} refused to epcheck");
    }
    // Outside the grant: Secrets, lists elsewhere, other objects, other namespaces, cluster
    // scope.
    let refused = [
        ("GET", format!("/api/v1/namespaces/{ns}/secrets")),
        ("GET", "/api/v1/namespaces/epcheck/secrets".to_string()),
        ("GET", "/api/v1/namespaces/default/endpoints".to_string()),
        ("GET", endpoints_path(ns, "other")),
        ("GET", endpoints_path("default", "kubernetes")),
        ("GET", "/api/v1/nodes".to_string()),
        ("GET", "/api/v1/endpoints".to_string()),
    ];
    for (method, path) in refused {
        let r = me
            .request(method, &path, None, Default::default())
            .await
            .expect("request");
        assert_eq!(r.status, 403, "{method} {path} was not refused to epcheck");
    }
    // Writing another object of the same namespace is refused too.
    let body = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "other", "namespace": ns},
        "subsets": [{"addresses": [{"ip": format!("{NET4}53")}], "ports": [{"port": 1}]}]});
    for (method, path) in [
        ("PUT", endpoints_path(ns, "other")),
        ("POST", format!("/api/v1/namespaces/{ns}/endpoints")),
    ] {
        let r = me.send_json(method, &path, &body).await.expect("request");
        assert_eq!(r.status, 403, "{method} {path} was not refused to epcheck");
    }
}
