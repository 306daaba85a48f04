//! `epcheck once` in Endpoints mode against the real ApiServer: create, no-op, update, a 409
//! from a concurrent writer, 403 and a wrong CA, the deprecation warning, and what the
//! mirroring controller derives for kube-proxy.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{
    Backends, NET4, Scratch, Svc, endpoint_ips, endpoints_path, epcheck_events, eventually, get,
    namespace, plane, send, service, slice_view, slices_of,
};
use super::{WebService, web_service};

const CHECK_PORT: u16 = 18080;

fn ip(n: u8) -> String {
    format!("{NET4}{n}")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What the mirroring controller made of the Endpoints object: its slices, with the
/// controller's own managed-by label, hold exactly `ready` as ready and `not_ready` as not.
async fn mirrored(ns: &str, svc: &str, ready: &[String], not_ready: &[String]) {
    let want = (ready.to_vec(), not_ready.to_vec());
    eventually(
        Duration::from_secs(20),
        "the mirrored EndpointSlices follow the Endpoints",
        || async {
            let slices = slices_of(ns, svc).await;
            let mirrored = slices.iter().all(|s| {
                s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                    == "endpointslicemirroring-controller.k8s.io"
            });
            (mirrored && !slices.is_empty() && slice_view(&slices) == want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn once_creates_leaves_alone_and_updates() {
    let ns = "once-endpoints";
    // application/yaml: the original tool's body format, which the real server must accept.
    let WebService { backends, s, cfg } = web_service(
        ns,
        &[ip(11), ip(12), ip(13)],
        2,
        "content_type: application/yaml",
    )
    .await;

    // Missing object: created, by a PUT to its own URL (create-on-update, a named create).
    let mark = super::audit().len();
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "created", "{}", r.stdout);
    let obj = get(&endpoints_path(ns, "web")).await;
    assert_eq!(
        endpoint_ips(&obj),
        (vec![ip(11), ip(12)], vec![ip(13)]),
        "{obj:#}"
    );
    assert_eq!(obj["subsets"][0]["ports"][0]["name"], "serve");
    assert_eq!(obj["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "epcheck"
    );
    let writes: Vec<_> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!((writes[0].verb.as_str(), writes[0].code), ("update", 201));
    mirrored(ns, "web", &[ip(11), ip(12)], &[ip(13)]).await;

    // Unchanged: reads only.
    let mark = super::audit().len();
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "unchanged", "{}", r.stdout);
    let events = epcheck_events(mark, ns);
    assert!(!events.is_empty(), "epcheck read nothing");
    assert!(
        events.iter().all(|e| !e.is_write()),
        "an unchanged object was written: {events:#?}"
    );

    // A backend goes down: one update, and kube-proxy's view follows.
    backends.down(&ip(12), CHECK_PORT).await;
    let mark = super::audit().len();
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "updated", "{}", r.stdout);
    let obj = get(&endpoints_path(ns, "web")).await;
    assert_eq!(endpoint_ips(&obj), (vec![ip(11)], vec![ip(12), ip(13)]));
    let writes: Vec<_> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.is_write())
        .collect();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!((writes[0].verb.as_str(), writes[0].code), ("update", 200));
    mirrored(ns, "web", &[ip(11)], &[ip(12), ip(13)]).await;
    assert!(!r.all().contains(&plane().info().epcheck_token));
}

/// Two services, so the Endpoints deprecation warning comes back on several responses: it is
/// surfaced once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn the_deprecation_warning_is_shown_once() {
    let ns = "once-warnings";
    namespace(ns).await;
    service(ns, "a", &[("serve", 8080)]).await;
    service(ns, "b", &[("serve", 8080)]).await;
    let backends = Backends::default();
    backends.up(&ip(21), CHECK_PORT).await;
    let s = Scratch::new();
    let svc = |key, name| Svc {
        key,
        namespace: ns,
        name,
        port: CHECK_PORT,
        ips: vec![ip(21), ip(22)],
    };
    let cfg = s.config(
        "c.yaml",
        "content_type: application/json",
        &[svc("a", "a"), svc("b", "b")],
    );
    s.apply_manifests(&cfg).await;
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "created");
    assert_eq!(v["services"][1]["action"], "created");
    // Each service read and wrote its object: four responses, each with the warning.
    let text = "v1 Endpoints is deprecated";
    assert_eq!(
        r.stderr.matches(text).count(),
        1,
        "the warning is not shown exactly once:\n{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn forbidden_and_a_wrong_ca_are_reported_clearly() {
    // A namespace for which no RBAC was applied: epcheck's identity may not touch it.
    let ns = "once-forbidden";
    namespace(ns).await;
    service(ns, "web", &[("serve", 8080)]).await;
    let backends = Backends::default();
    backends.up(&ip(31), CHECK_PORT).await;
    let s = Scratch::new();
    let svc = Svc {
        key: "web",
        namespace: ns,
        name: "web",
        port: CHECK_PORT,
        ips: vec![ip(31), ip(32)],
    };
    let cfg = s.config("c.yaml", "content_type: application/json", &[svc]);
    let (v, r) = s.once(&cfg).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "failed", "{}", r.stdout);
    let err = v["services"][0]["error"].as_str().unwrap_or_default();
    // It names the refused verb, resource and namespace, and where the RBAC comes from.
    for word in [
        "403",
        "cannot get resource \"services\"",
        ns,
        "epcheck manifests",
    ] {
        assert!(err.contains(word), "403 error lacks {word:?}: {err}");
    }
    assert!(get(&endpoints_path(ns, "web")).await.is_null());

    // A CA that did not sign the server's certificate.
    let other = fixtures::apiserver::ApiServer::builder()
        .tls(true)
        .start()
        .await
        .expect("stand-in");
    let wrong_ca = s.e.path("wrong-ca.crt");
    other.write_ca_pem(&wrong_ca).expect("CA");
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        &format!("ca_file: {}", plane().info().ca_file.display()),
        &format!("ca_file: {}", wrong_ca.display()),
    );
    let bad = s.e.write("bad-ca.yaml", &text);
    let (_, r) = s.once(bad.to_str().expect("path")).await;
    assert_eq!(r.code, 1, "{}", r.all());
    let all = r.all().to_lowercase();
    assert!(
        all.contains("is signed by a ca that ca file"),
        "a wrong CA is not named as such: {}",
        r.all()
    );
}

/// A plain-HTTP proxy in front of the real ApiServer that, before forwarding epcheck's first
/// PUT of an Endpoints object, changes that object as another writer would: the PUT then
/// carries a stale resourceVersion and the real server answers 409.
async fn conflicting_proxy(token: String) -> (String, Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let injected = Arc::new(AtomicBool::new(false));
    let flag = injected.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let flag = flag.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let flag = flag.clone();
                    let token = token.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default();
                        let ct = req
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default();
                        if method == "PUT"
                            && path.contains("/endpoints/")
                            && !flag.swap(true, Ordering::SeqCst)
                        {
                            let mut live = get(&path).await;
                            live["metadata"]["annotations"]["example.com/other-writer"] =
                                json!("was here");
                            send("PUT", &path, &live).await;
                        }
                        let upstream = plane()
                            .as_epcheck()
                            .expect("client")
                            .with_token(token)
                            .request(&method, &path, ct.as_deref(), body)
                            .await
                            .expect("forward");
                        let mut resp = hyper::Response::builder().status(upstream.status);
                        for (k, v) in &upstream.headers {
                            if k != http::header::TRANSFER_ENCODING
                                && k != http::header::CONNECTION
                                && k != http::header::CONTENT_LENGTH
                            {
                                resp = resp.header(k, v);
                            }
                        }
                        Ok::<_, Infallible>(resp.body(Full::new(upstream.body)).expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, injected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn a_conflict_with_another_writer_is_retried() {
    let ns = "once-conflict";
    let WebService { backends, s, cfg } =
        web_service(ns, &[ip(41), ip(42)], 1, "content_type: application/json").await;
    let (v, r) = s.once(&cfg).await;
    assert_eq!(v["services"][0]["action"], "created", "{}", r.all());

    // Through the proxy: 42 comes up, epcheck's PUT meets the other writer's change.
    backends.up(&ip(42), CHECK_PORT).await;
    let (url, injected) = conflicting_proxy(plane().info().epcheck_token.clone()).await;
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace(plane().url(), &url);
    let proxied = s.e.write("proxied.yaml", &text);
    let mark = super::audit().len();
    let (v, r) = s.once(proxied.to_str().expect("path")).await;
    assert!(injected.load(Ordering::SeqCst), "the proxy saw no PUT");
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(v["services"][0]["action"], "updated", "{}", r.stdout);
    let updates: Vec<(String, u16)> = epcheck_events(mark, ns)
        .into_iter()
        .filter(|e| e.verb == "update")
        .map(|e| (e.verb, e.code))
        .collect();
    assert_eq!(
        updates,
        [("update".to_string(), 409), ("update".to_string(), 200)],
        "expected one 409 then a successful retry"
    );
    let obj = get(&endpoints_path(ns, "web")).await;
    assert_eq!(endpoint_ips(&obj), (strings(&[&ip(41), &ip(42)]), vec![]));
    // The other writer's annotation survived: epcheck starts from the live object.
    assert_eq!(
        obj["metadata"]["annotations"]["example.com/other-writer"],
        "was here"
    );
    let _: Value = obj;
}
