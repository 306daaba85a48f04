//! The stand-in ApiServer of `fixtures/` kept honest: the requests epcheck makes (and the
//! mistakes it could make) are sent to both the real kube-apiserver and the stand-in, and what
//! each answers is compared — status codes, `Status` reasons, details and messages, `Warning`
//! headers, and the object as stored. A difference is a bug in the stand-in.

use bytes::Bytes;
use fixtures::apiserver::{ApiServer, Permissions, RawClient, RawResponse};
use serde_json::{Value, json};

use super::{NET4, namespace, plane};

const NS: &str = "standin";

/// One request of the comparison: a label, the method, the path, and a body.
struct Step {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// Send the body as YAML instead of JSON.
    yaml: bool,
    /// Which client: the admin, or an identity with no rights in the namespace.
    as_nobody: bool,
}

fn step(what: &'static str, method: &'static str, path: String, body: Option<Value>) -> Step {
    Step {
        what,
        method,
        path,
        body,
        yaml: false,
        as_nobody: false,
    }
}

fn endpoints(name: &str, ips: &[&str], rv: Option<&str>) -> Value {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    let mut v = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "epcheck"}},
        "subsets": [{"addresses": addresses, "ports": [{"name": "serve", "port": 8080, "protocol": "TCP"}]}]});
    if let Some(rv) = rv {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    v
}

fn slice(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"kubernetes.io/service-name": "cmp", "endpointslice.kubernetes.io/managed-by": "epcheck.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "serve", "port": 8080, "protocol": "TCP"}]})
}

fn lease(name: &str, rv: Option<&str>) -> Value {
    let mut v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}});
    if let Some(rv) = rv {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    v
}

fn the_steps() -> Vec<Step> {
    let ep = |name: &str| format!("/api/v1/namespaces/{NS}/endpoints/{name}");
    let eps = format!("/api/v1/namespaces/{NS}/endpoints");
    let sl =
        |name: &str| format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{name}");
    let sls = format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices");
    let le = |name: &str| format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}");
    let les = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
    let a = &format!("{NET4}201");
    let b = &format!("{NET4}202");
    let mut yaml_put = step(
        "PUT of a YAML body (create-on-update)",
        "PUT",
        ep("cmp-yaml"),
        Some(endpoints("cmp-yaml", &[a], None)),
    );
    yaml_put.yaml = true;
    let mut forbidden = step("GET without RBAC", "GET", ep("cmp"), None);
    forbidden.as_nobody = true;
    let mut forbidden_put = step(
        "PUT without RBAC",
        "PUT",
        ep("cmp"),
        Some(endpoints("cmp", &[a], None)),
    );
    forbidden_put.as_nobody = true;
    vec![
        step("GET of a missing Endpoints", "GET", ep("cmp"), None),
        step(
            "PUT without resourceVersion creates",
            "PUT",
            ep("cmp"),
            Some(endpoints("cmp", &[a], None)),
        ),
        step("GET of the created Endpoints", "GET", ep("cmp"), None),
        step(
            "PUT with a stale resourceVersion",
            "PUT",
            ep("cmp"),
            Some(endpoints("cmp", &[a, b], Some("1"))),
        ),
        step(
            "PUT without resourceVersion updates unconditionally",
            "PUT",
            ep("cmp"),
            Some(endpoints("cmp", &[b, a], None)),
        ),
        step("GET after the update", "GET", ep("cmp"), None),
        step(
            "POST of an existing name",
            "POST",
            eps.clone(),
            Some(endpoints("cmp", &[a], None)),
        ),
        step(
            "PUT whose body names another object",
            "PUT",
            ep("cmp"),
            Some(endpoints("other", &[a], None)),
        ),
        step(
            "PUT of a loopback address",
            "PUT",
            ep("cmp-loop"),
            Some(endpoints("cmp-loop", &["127.0.0.1"], None)),
        ),
        step(
            "PUT of a link-local address",
            "PUT",
            ep("cmp-link"),
            Some(endpoints("cmp-link", &["169.254.1.1"], None)),
        ),
        step(
            "PUT of an empty subset",
            "PUT",
            ep("cmp-empty"),
            Some(json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "cmp-empty", "namespace": NS}, "subsets": [{}]})),
        ),
        step(
            "PUT with subsets: []",
            "PUT",
            ep("cmp-none"),
            Some(json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "cmp-none", "namespace": NS}, "subsets": []})),
        ),
        yaml_put,
        step(
            "PUT of a missing EndpointSlice",
            "PUT",
            sl("cmp-s"),
            Some(slice("cmp-s", a)),
        ),
        step(
            "POST of an EndpointSlice",
            "POST",
            sls.clone(),
            Some(slice("cmp-s", a)),
        ),
        step(
            "POST of the same EndpointSlice again",
            "POST",
            sls,
            Some(slice("cmp-s", a)),
        ),
        step(
            "EndpointSlice with a loopback address",
            "PUT",
            sl("cmp-s"),
            Some(slice("cmp-s", "127.0.0.1")),
        ),
        step("GET of the EndpointSlice", "GET", sl("cmp-s"), None),
        step("POST of a Lease", "POST", les, Some(lease("cmp-l", None))),
        step(
            "PUT of a Lease without resourceVersion",
            "PUT",
            le("cmp-l"),
            Some(lease("cmp-l", None)),
        ),
        step(
            "PUT of a missing Lease without resourceVersion",
            "PUT",
            le("cmp-new"),
            Some(lease("cmp-new", None)),
        ),
        step(
            "PUT of a Lease with a stale resourceVersion",
            "PUT",
            le("cmp-l"),
            Some(lease("cmp-l", Some("1"))),
        ),
        forbidden,
        forbidden_put,
    ]
}

/// What of a response is compared: the code, a `Status` body's reason/details/message (digits
/// normalised), or the parts of a stored object epcheck reads back.
fn essence(r: &RawResponse) -> Value {
    let body = r.json().unwrap_or(Value::Null);
    let digits = |s: &str| {
        s.chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect::<String>()
    };
    let squash = |s: &str| {
        // "0" repeated stands for any number.
        let d = digits(s);
        let mut out = String::new();
        for c in d.chars() {
            if !(c == '0' && out.ends_with('0')) {
                out.push(c);
            }
        }
        out
    };
    let warnings: Vec<String> = r.warnings();
    if body["kind"] == "Status" {
        let causes: Vec<Value> = body["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"reason": c["reason"], "field": c["field"], "message": squash(c["message"].as_str().unwrap_or_default())}))
            .collect();
        return json!({
            "code": r.status,
            "status": body["status"],
            "reason": body["reason"],
            "message": squash(body["message"].as_str().unwrap_or_default()),
            "details": {"name": body["details"]["name"], "kind": body["details"]["kind"],
                        "group": body["details"]["group"], "causes": causes},
            "warnings": warnings,
        });
    }
    let mut object = json!({
        "code": r.status,
        "kind": body["kind"],
        "apiVersion": body["apiVersion"],
        "name": body["metadata"]["name"],
        "namespace": body["metadata"]["namespace"],
        "labels": body["metadata"]["labels"],
        "has_resource_version": body["metadata"]["resourceVersion"].is_string(),
        "warnings": warnings,
    });
    for key in ["subsets", "endpoints", "ports", "addressType", "spec"] {
        if !body[key].is_null() {
            object[key] = body[key].clone();
        }
    }
    if let Some(spec) = object.get_mut("spec") {
        // Times and transitions differ by nature; the holder and duration must not.
        if let Some(m) = spec.as_object_mut() {
            m.retain(|k, _| k == "holderIdentity" || k == "leaseDurationSeconds");
        }
    }
    object
}

async fn send(client: &RawClient, s: &Step) -> RawResponse {
    let (ct, body) = match &s.body {
        None => (None, Bytes::new()),
        Some(v) if s.yaml => (
            Some("application/yaml"),
            Bytes::from(serde_yaml::to_string(v).expect("yaml")),
        ),
        Some(v) => (
            Some("application/json"),
            Bytes::from(serde_json::to_vec(v).expect("json")),
        ),
    };
    client
        .request(s.method, &s.path, ct, body)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", s.what))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn the_stand_in_answers_like_the_real_apiserver() {
    namespace(NS).await;
    let real_admin = plane().admin().expect("admin");
    // epcheck's identity has no RBAC in this namespace: that is the "nobody" of the steps.
    let real_nobody = plane().as_epcheck().expect("client");
    super::service(NS, "cmp", &[("serve", 8080)]).await;

    let standin = ApiServer::builder().start().await.expect("stand-in");
    standin.put_service(NS, "cmp");
    standin.add_user_token("admin-token", "conformance-admin", Permissions::all());
    standin.add_user_token(
        "nobody-token",
        plane().info().epcheck_user.clone(),
        Permissions::none(),
    );
    let fake_admin = RawClient::new(&standin)
        .expect("client")
        .with_token("admin-token");
    let fake_nobody = RawClient::new(&standin)
        .expect("client")
        .with_token("nobody-token");

    let mut differences = Vec::new();
    for s in the_steps() {
        let (real, fake) = if s.as_nobody {
            (send(&real_nobody, &s).await, send(&fake_nobody, &s).await)
        } else {
            (send(&real_admin, &s).await, send(&fake_admin, &s).await)
        };
        let (real, fake) = (essence(&real), essence(&fake));
        if real != fake {
            differences.push(format!(
                "{} ({} {}):\n  real:     {real}\n  stand-in: {fake}",
                s.what, s.method, s.path
            ));
        }
    }
    // An unknown token: 401 from both.
    let bad_real = RawClient::connect(plane().addr(), Some(plane().ca_pem()))
        .expect("client")
        .with_token("not-a-token");
    let bad_fake = RawClient::new(&standin)
        .expect("client")
        .with_token("not-a-token");
    let path = format!("/api/v1/namespaces/{NS}/endpoints/cmp");
    let (real, fake) = (
        essence(&bad_real.get(&path).await.expect("GET")),
        essence(&bad_fake.get(&path).await.expect("GET")),
    );
    if real != fake {
        differences.push(format!(
            "unknown token:\n  real:     {real}\n  stand-in: {fake}"
        ));
    }
    assert!(
        differences.is_empty(),
        "the stand-in differs from the real ApiServer {}:\n{}",
        plane().info().version,
        differences.join("\n")
    );
}

/// What an `epcheck once` step left: the report's action, the requests that wrote (method and
/// status), and the stored object's addresses, ports and epcheck's label.
fn outcome(report: &Value, writes: Vec<(String, u16)>, stored: &Value) -> Value {
    let (ready, not_ready) = super::endpoint_ips(stored);
    json!({
        "action": report["services"][0]["action"],
        "writes": writes,
        "ready": ready,
        "not_ready": not_ready,
        "ports": stored["subsets"][0]["ports"],
        "label": stored["metadata"]["labels"]["app.kubernetes.io/managed-by"],
    })
}

/// The same `epcheck once` scenario — create, no-op, update — against both servers: the
/// reports, the writes and the stored objects agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn once_does_the_same_against_both() {
    let ns = "standin-once";
    namespace(ns).await;
    super::service(ns, "web", &[("serve", 8080)]).await;
    let standin = ApiServer::builder()
        .tls(true)
        .start()
        .await
        .expect("stand-in");
    standin.put_service(ns, "web");
    standin.add_user_token(
        "standin-token",
        plane().info().epcheck_user.clone(),
        Permissions::all(),
    );
    let backends = super::Backends::default();
    let ips: Vec<String> = (91..=92).map(|n| format!("{NET4}{n}")).collect();
    for ip in &ips {
        backends.up(ip, 18080).await;
    }
    let s = super::Scratch::new();
    let svc = super::Svc {
        key: "web",
        namespace: ns,
        name: "web",
        port: 18080,
        ips: ips.clone(),
    };
    let real_cfg = s.config("real.yaml", "content_type: application/yaml", &[svc]);
    s.apply_manifests(&real_cfg).await;
    standin
        .write_ca_pem(s.e.path("standin-ca.crt"))
        .expect("CA");
    s.e.write("standin-token", "standin-token");
    let text = std::fs::read_to_string(&real_cfg)
        .expect("config")
        .replace(plane().url(), &standin.url())
        .replace(
            &plane().info().ca_file.display().to_string(),
            &s.e.path("standin-ca.crt").display().to_string(),
        )
        .replace("./sa/token", "./standin-token");
    let fake_cfg = s.e.write("standin.yaml", &text);
    let fake_cfg = fake_cfg.to_str().expect("path");
    let path = super::endpoints_path(ns, "web");

    for step in ["create", "unchanged", "update"] {
        if step == "update" {
            backends.down(&ips[1], 18080).await;
        }
        let mark = super::audit().len();
        let (report, r) = s.once(&real_cfg).await;
        assert_eq!(r.code, 0, "{step} (real): {}", r.all());
        let writes = super::epcheck_events(mark, ns)
            .into_iter()
            .filter(|e| e.is_write())
            .map(|e| (e.verb, e.code))
            .collect();
        let real = outcome(&report, writes, &super::get(&path).await);

        standin.clear_requests();
        let (report, r) = s.once(fake_cfg).await;
        assert_eq!(r.code, 0, "{step} (stand-in): {}", r.all());
        let writes = standin
            .writes()
            .iter()
            .map(|w| {
                let verb = if w.method == "POST" {
                    "create"
                } else {
                    "update"
                };
                (verb.to_string(), w.status.unwrap_or_default())
            })
            .collect();
        let stored = standin
            .get_object(fixtures::apiserver::Resource::Endpoints, ns, "web")
            .unwrap_or(Value::Null);
        let fake = outcome(&report, writes, &stored);
        assert_eq!(
            real, fake,
            "{step}: the stand-in and the real ApiServer differ"
        );
    }
}
