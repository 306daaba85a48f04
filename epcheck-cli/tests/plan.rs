//! `epcheck plan`: probe once, print the Endpoints each service would get.

use fixtures::targets::{AcceptingTarget, RefusingTarget};
use k8s_openapi::api::core::v1::Endpoints as OpenApiEndpoints;
use serde::Deserialize as _;

use crate::util::{Epcheck, web_config};

/// A config whose service `web` has backends 127.0.0.1-3 on `port`.
fn config(port: u16, extra: &str) -> String {
    let top = format!(
        "interval: 2000\npingtimeout: 500\nurl: https://127.0.0.1:6443\ntoken_file: default\n{extra}"
    );
    let ips: Vec<String> = (1..=3).map(|d| format!("127.0.0.{d}")).collect();
    web_config(&top, port, &ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_plan_deserialises_with_k8s_openapi() {
    // One listener on 127.0.0.1 only: 127.0.0.2 and 127.0.0.3 refuse on the same port.
    let up = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    let path = e.write("c.yaml", &config(up.addr().port(), ""));
    let r = e.run_async(&["plan", "-f", path.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let docs: Vec<OpenApiEndpoints> = serde_yaml::Deserializer::from_str(&r.stdout)
        .map(|d| OpenApiEndpoints::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1);
    let ep = &docs[0];
    assert_eq!(ep.metadata.name.as_deref(), Some("web"));
    assert_eq!(ep.metadata.namespace.as_deref(), Some("default"));
    let subsets = ep.subsets.as_ref().unwrap();
    assert_eq!(subsets.len(), 1);
    let ready: Vec<&str> = subsets[0]
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(ready, ["127.0.0.1"]);
    let not_ready: Vec<&str> = subsets[0]
        .not_ready_addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| a.ip.as_str())
        .collect();
    assert_eq!(not_ready, ["127.0.0.2", "127.0.0.3"]);
    assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(
        ep.metadata
            .labels
            .as_ref()
            .unwrap()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("epcheck")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_plan_follows_the_documented_schema() {
    let up = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    let path = e.write("c.yaml", &config(up.addr().port(), "not_ready: drop"));
    let r = e
        .run_async(&["plan", "-o", "json", "-f", path.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &v["services"][0];
    assert_eq!(s["service"], "web");
    assert_eq!(s["namespace"], "default");
    assert_eq!(s["name"], "web");
    assert_eq!(s["action"], "planned");
    assert_eq!(s["ready"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        s["not_ready"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    assert!(s["error"].is_null());
    let t = s["targets"].as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["name"], "node-01");
    assert_eq!(t[0]["up"], true);
    assert!(t[0]["latency_ms"].is_number());
    assert_eq!(t[1]["up"], false);
    assert!(t[1]["error"].as_str().unwrap().contains("refused"));
    // not_ready: drop leaves failing targets out of the object.
    let subset = &s["endpoints"]["subsets"][0];
    assert!(subset.get("notReadyAddresses").is_none(), "{subset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_failing_holds_the_plan() {
    let refused = RefusingTarget::new().unwrap();
    let e = Epcheck::new();
    let path = e.write("c.yaml", &config(refused.addr().port(), ""));
    let r = e
        .run_async(&["plan", "-o", "json", "-f", path.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "held");
    assert!(
        v["services"][0]["error"]
            .as_str()
            .unwrap()
            .contains("fail-safe")
    );
}

/// A loopback HTTP server answering every request with `status`; returns its port.
async fn http_server(status: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_probes_follow_the_status() {
    let e = Epcheck::new();
    for (status, up) in [(200, true), (503, false)] {
        let port = http_server(status).await;
        let top = "interval: 2000\npingtimeout: 500\nurl: https://127.0.0.1:6443\ntoken_file: default\n\
                   probe:\n  kind: http\n  http: {path: /healthz, expect_status: [200]}\n";
        let path = e.write("http.yaml", &web_config(top, port, &["127.0.0.1".into()]));
        let r = e
            .run_async(&["plan", "-o", "json", "-f", path.to_str().unwrap()])
            .await;
        assert_eq!(r.code, 0, "{}", r.all());
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let t = &v["services"][0]["targets"][0];
        assert_eq!(t["up"], up, "{t}");
        if !up {
            assert!(t["error"].as_str().unwrap().contains("HTTP 503"), "{t}");
        }
    }
}
