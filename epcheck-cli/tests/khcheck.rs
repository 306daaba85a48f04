//! `epcheck khcheck`: Kuberhealthy mode against a loopback receiver standing in for
//! Kuberhealthy's reporting endpoint, and loopback targets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fixtures::targets::AcceptingTarget;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::util::{Epcheck, Run, web_config};

const UUID: &str = "5b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

/// Records every POST and answers 200.
struct Kuberhealthy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kuberhealthy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let s = Arc::clone(&s);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            s.lock()
                                .unwrap()
                                .push((parts.headers, body.unwrap_or_default()));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}/externalCheckStatusReport", self.addr)
    }

    fn reports(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Kuberhealthy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `epcheck khcheck -f c.yaml` with the Kuberhealthy variables in `vars`.
async fn khcheck(e: &Epcheck, vars: &[(&str, String)]) -> Run {
    let mut cmd = e.cmd(&["khcheck", "-f", "c.yaml"]);
    for name in ["KH_REPORTING_URL", "KH_RUN_UUID", "KH_CHECK_RUN_DEADLINE"] {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Run::from(tokio::process::Command::from(cmd).output().await.unwrap())
}

fn setup(port: u16, ips: &[&str]) -> Epcheck {
    let e = Epcheck::new();
    let ips: Vec<String> = ips.iter().map(|s| (*s).to_owned()).collect();
    let top = "interval: 2000\npingtimeout: 500\nurl: https://127.0.0.1:6443\n\
               endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints";
    e.write("c.yaml", &web_config(top, port, &ips));
    e
}

fn vars(url: String, deadline: u64) -> Vec<(&'static str, String)> {
    vec![
        ("KH_REPORTING_URL", url),
        ("KH_RUN_UUID", UUID.to_owned()),
        ("KH_CHECK_RUN_DEADLINE", deadline.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_targets_are_reported_with_the_run_uuid() {
    // Listening on 127.0.0.1 only: 127.0.0.2 refuses on the same port.
    let up = AcceptingTarget::start().await.unwrap();
    let port = up.addr().port();
    let kh = Kuberhealthy::start().await;
    let e = setup(port, &["127.0.0.1", "127.0.0.2"]);
    let r = khcheck(&e, &vars(kh.url(), unix_now() + 30)).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let reports = kh.reports();
    assert_eq!(reports.len(), 1);
    let (headers, body) = &reports[0];
    assert_eq!(headers.get("kh-run-uuid").unwrap(), UUID);
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"OK": false, "Errors": [
            format!("web/node-02 127.0.0.2:{port}: connection refused")
        ]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_up_is_ok() {
    let up = AcceptingTarget::start().await.unwrap();
    let kh = Kuberhealthy::start().await;
    let e = setup(up.addr().port(), &["127.0.0.1"]);
    let r = khcheck(&e, &vars(kh.url(), unix_now() + 30)).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let body: serde_json::Value = serde_json::from_slice(&kh.reports()[0].1).unwrap();
    assert_eq!(body, serde_json::json!({"OK": true, "Errors": []}));
}

#[tokio::test]
async fn missing_variables_are_named() {
    let e = setup(9, &["127.0.0.1"]);
    let r = khcheck(&e, &[]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    for name in ["KH_REPORTING_URL", "KH_RUN_UUID", "KH_CHECK_RUN_DEADLINE"] {
        assert!(
            r.stderr.contains(&format!("{name} is not set")),
            "{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains("Kuberhealthy external check"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn a_past_deadline_fails_fast_without_probing() {
    let up = AcceptingTarget::start().await.unwrap();
    let kh = Kuberhealthy::start().await;
    let e = setup(up.addr().port(), &["127.0.0.1"]);
    let start = Instant::now();
    let r = khcheck(&e, &vars(kh.url(), unix_now() - 1)).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        r.stderr.contains("too close to send a report"),
        "{}",
        r.stderr
    );
    assert!(kh.reports().is_empty());
    assert_eq!(up.accepted(), 0, "probed although the deadline had passed");
}

#[tokio::test]
async fn an_unreachable_kuberhealthy_is_exit_1_before_the_deadline() {
    let up = AcceptingTarget::start().await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = setup(up.addr().port(), &["127.0.0.1"]);
    let deadline = unix_now() + 4;
    let url = format!("http://{closed}/externalCheckStatusReport");
    let r = khcheck(&e, &vars(url, deadline)).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(unix_now() <= deadline, "ran past the deadline");
    assert!(
        r.stderr
            .contains("could not deliver the report to http://127.0.0.1:"),
        "{}",
        r.stderr
    );
}
