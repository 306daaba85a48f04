//! Conformance tests: the built `epcheck` binary against the real kube-apiserver of
//! `conformance/` (SPEC §12), with the kube-controller-manager's EndpointSlice mirroring and
//! garbage-collector controllers running beside it.
//!
//! # How it runs
//! The real ApiServer refuses loopback addresses in Endpoints, so the backends need other
//! addresses. [`real_apiserver`], the one ordinary test here, builds the control plane
//! (`conformance/build.sh`, cached by Go) and re-runs this test executable inside a private
//! network namespace (`unshare --net`) whose loopback carries the lab ranges 198.51.100.0/24 and
//! 2001:db8::/64 besides 127.0.0.1. The namespace has no other interface, so nothing can leave
//! it. Inside, the `#[ignore]`d scenario tests run (`--ignored`): they share one control plane,
//! each in its own Kubernetes namespace, and every epcheck they run uses the identity and the
//! RBAC that `epcheck manifests` prints, applied through the real API.
//!
//! Needs root (for the namespace), Go 1.26 and the Go module proxy (for the first build).
//! Without root the test prints why and passes, except under CI, where it fails.
//!
//! Run them alone: `cargo test -p epcheck-cli --test conformance -- --nocapture`
//! (`EPCHECK_CONFORMANCE_FILTER=slices` runs only the scenarios whose name contains it). Another
//! Kubernetes release: `KUBE_VERSION=v1.36.3 bash conformance/build.sh /tmp/kc` and then
//! `EPCHECK_KUBE_CONFORMANCE=/tmp/kc cargo test -p epcheck-cli --test conformance`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../util.rs"]
mod util;

mod consensus;
mod election;
mod once;
mod prune;
mod rbac;
mod run;
mod slices;
mod standin;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use fixtures::apiserver::RawClient;
use fixtures::kube::{AuditEvent, ControlPlane, apply};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::util::Epcheck;

/// Set by [`real_apiserver`] for the re-run inside the namespace: the control plane's binary.
const INSIDE_ENV: &str = "EPCHECK_CONFORMANCE_INSIDE";
/// The IPv4 lab subnet on the namespace's loopback (every address in it is local there).
/// Scenarios run in parallel and share port 18080, so each binds its own addresses: once
/// .11-.42, rbac .51-.53, run .61-.63, election .71-.72, slices .81-.83, .100-.219 and
/// .231-.233, standin .91-.92, run in slice mode .241-.243, prune .244-.249.
pub const NET4: &str = "198.51.100.";
/// IPv6 lab addresses put on the namespace's loopback (one each).
pub const NET6: [&str; 3] = ["2001:db8::11", "2001:db8::12", "2001:db8::13"];

/// The namespace's set-up, run by `sh -c` as root inside `unshare --net`, then `exec` of the
/// test executable with the arguments that follow.
const NETNS_SETUP: &str = "set -e
ip link set lo up
ip addr add 198.51.100.1/24 dev lo
for a in 2001:db8::11 2001:db8::12 2001:db8::13; do ip -6 addr add $a/128 dev lo; done
exec \"$@\"";

/// Builds the control plane and runs the scenario tests inside a private network namespace.
#[test]
fn real_apiserver() {
    let ci = std::env::var_os("CI").is_some();
    let skip = |why: &str| {
        assert!(!ci, "conformance tests cannot run under CI: {why}");
        eprintln!("skipping the real-ApiServer conformance tests: {why}");
    };
    if !nix_is_root() {
        return skip("they need root for a private network namespace");
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        return skip("`unshare` (util-linux) is missing");
    }
    let binary = match fixtures::kube::ensure_built() {
        Ok(b) => b,
        Err(e) if ci => panic!("building the control plane: {e}"),
        Err(e) => return skip(&format!("the control plane could not be built: {e}")),
    };
    let exe = std::env::current_exe().expect("test executable");
    let threads = std::env::var("EPCHECK_CONFORMANCE_THREADS").unwrap_or_else(|_| "2".into());
    // EPCHECK_CONFORMANCE_FILTER=slices runs only the scenarios whose name contains it.
    let filter = std::env::var("EPCHECK_CONFORMANCE_FILTER").unwrap_or_default();
    let started = Instant::now();
    let status = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", NETNS_SETUP, "sh"])
        .arg(&exe)
        .args(["--ignored", "--nocapture", "--test-threads", &threads])
        .args((!filter.is_empty()).then_some(filter))
        .env(INSIDE_ENV, &binary)
        .status()
        .expect("unshare");
    eprintln!(
        "conformance scenarios took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "conformance scenarios failed: {status}");
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The shared control plane (started by the first scenario that needs it).
pub fn plane() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| {
        let binary = std::env::var_os(INSIDE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("conformance scenarios run only through the `real_apiserver` test")
            });
        let plane = ControlPlane::start_binary(&binary).expect("start the control plane");
        eprintln!(
            "control plane {} ready at {}",
            plane.info().version,
            plane.url()
        );
        plane
    })
}

pub fn admin() -> RawClient {
    plane().admin().expect("admin client")
}

/// `GET path` as admin; the body as JSON, or `Value::Null` on 404.
pub async fn get(path: &str) -> Value {
    let r = admin().get(path).await.expect("GET");
    match r.status {
        200 => r.json().expect("JSON body"),
        404 => Value::Null,
        s => panic!("GET {path}: {s} {}", String::from_utf8_lossy(&r.body)),
    }
}

/// `method path` with a JSON body as admin; panics unless the answer is 2xx.
pub async fn send(method: &str, path: &str, body: &Value) -> Value {
    let r = admin().send_json(method, path, body).await.expect(method);
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    r.json().unwrap_or(Value::Null)
}

/// Creates a Kubernetes namespace (idempotent).
pub async fn namespace(name: &str) {
    let r = apply(
        &admin(),
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
    .expect("namespace");
    assert!(r.status < 300, "namespace {name}: {}", r.status);
}

/// Creates a selector-less Service with the given named ports; returns it as stored.
pub async fn service(ns: &str, name: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    send(
        "POST",
        &format!("/api/v1/namespaces/{ns}/services"),
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": ports}}),
    )
    .await
}

pub fn endpoints_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/endpoints/{name}")
}

/// The IPs of `addresses` (ready) and `notReadyAddresses` of an Endpoints object, sorted.
pub fn endpoint_ips(obj: &Value) -> (Vec<String>, Vec<String>) {
    (
        fixtures::apiserver::endpoint_ips(obj, "addresses"),
        fixtures::apiserver::endpoint_ips(obj, "notReadyAddresses"),
    )
}

/// The EndpointSlices labelled `kubernetes.io/service-name=<svc>`: what kube-proxy reads.
pub async fn slices_of(ns: &str, svc: &str) -> Vec<Value> {
    let v = get(&format!(
        "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{svc}"
    ))
    .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

/// What kube-proxy routes to from `slices`: (ready, not ready) addresses, each once (it merges
/// an endpoint listed in two slices). An address both ready and not ready counts as ready,
/// the worse case for the assertions.
pub fn routed(slices: &[Value]) -> (Vec<String>, Vec<String>) {
    let (mut ready, mut not_ready) = slice_view(slices);
    ready.dedup();
    not_ready.dedup();
    not_ready.retain(|a| !ready.contains(a));
    (ready, not_ready)
}

/// The `endpointslice.kubernetes.io/managed-by` values of `slices`, sorted, once each.
pub fn managers(slices: &[Value]) -> Vec<String> {
    let mut m: Vec<String> = slices
        .iter()
        .map(|s| {
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                .as_str()
                .unwrap_or("(none)")
                .to_string()
        })
        .collect();
    m.sort();
    m.dedup();
    m
}

/// (ready, not ready) addresses over all of a Service's slices, as kube-proxy would see them
/// (`ready` absent counts as ready, per the API's documentation).
pub fn slice_view(slices: &[Value]) -> (Vec<String>, Vec<String>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for s in slices {
        for ep in s["endpoints"].as_array().into_iter().flatten() {
            let is_ready = ep["conditions"]["ready"].as_bool().unwrap_or(true);
            for a in ep["addresses"].as_array().into_iter().flatten() {
                let a = a.as_str().unwrap_or_default().to_string();
                if is_ready {
                    ready.push(a);
                } else {
                    not_ready.push(a);
                }
            }
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// Polls `f` every 200 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Audit events from the real server so far.
pub fn audit() -> Vec<AuditEvent> {
    plane().audit().expect("audit log")
}

/// epcheck's requests in Kubernetes namespace `ns` recorded after the first `skip` events.
pub fn epcheck_events(skip: usize, ns: &str) -> Vec<AuditEvent> {
    let user = &plane().info().epcheck_user;
    audit()
        .into_iter()
        .skip(skip)
        .filter(|e| &e.user == user && e.namespace == ns)
        .collect()
}

/// TCP backends listening on lab addresses (in the namespace), switched up and down.
#[derive(Default)]
pub struct Backends {
    tasks: Mutex<HashMap<SocketAddr, JoinHandle<()>>>,
}

impl Backends {
    /// Starts accepting (and closing) connections on `ip:port`.
    pub async fn up(&self, ip: &str, port: u16) {
        let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        if let Some(old) = self.tasks.lock().expect("lock").insert(addr, task) {
            old.abort();
        }
    }

    /// Stops listening on `ip:port`: probes are refused from now on.
    pub async fn down(&self, ip: &str, port: u16) {
        let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port);
        let task = self.tasks.lock().expect("lock").remove(&addr);
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.lock() {
            for t in tasks.values() {
                t.abort();
            }
        }
    }
}

/// One service of a test config.
pub struct Svc<'a> {
    pub key: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub port: u16,
    pub ips: Vec<String>,
}

/// A scratch directory with epcheck's token and the control plane's CA.
pub struct Scratch {
    pub e: Epcheck,
}

impl Default for Scratch {
    fn default() -> Self {
        let e = Epcheck::new();
        e.write("sa/token", &format!("{}\n", plane().info().epcheck_token));
        Scratch { e }
    }
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `name` with a config for `services` (one serving port `serve`/TCP each) against
    /// the control plane, with `extra` top-level keys.
    pub fn config(&self, name: &str, extra: &str, services: &[Svc<'_>]) -> String {
        let mut info = String::new();
        let mut checks = String::new();
        for s in services {
            info.push_str(&format!(
                "  {}:\n    namespace: {}\n    name: {}\n",
                s.key, s.namespace, s.name
            ));
            checks.push_str(&format!(
                "  {}:\n    port: {}\n    iplist:\n",
                s.key, s.port
            ));
            for (i, ip) in s.ips.iter().enumerate() {
                checks.push_str(&format!(
                    "      - name: node-{:02}\n        ip: \"{ip}\"\n",
                    i + 1
                ));
            }
        }
        let text = format!(
            "interval: 1000\npingtimeout: 500\nurl: {url}\nca_file: {ca}\n\
             endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints\n\
             token_file: ./sa/token\n\
             probe: {{rise: 1, fall: 1, fast_interval: 200}}\n\
             metrics: {{listen: \"127.0.0.1:0\"}}\n\
             {extra}\n\
             service_info:\n{info}service_healthcheck_list:\n{checks}\
             endpoint_template:\n  kind: Endpoints\n  apiVersion: v1\n  metadata:\n    name: x\n    namespace: x\n  \
             subsets:\n    - ports:\n        - name: serve\n          port: 8080\n          protocol: TCP\n",
            url = plane().url(),
            ca = plane().info().ca_file.display(),
        );
        self.e
            .write(name, &text)
            .to_str()
            .expect("utf-8 path")
            .to_string()
    }

    /// Applies everything `epcheck manifests -f config` prints, as admin, through the real API.
    pub async fn apply_manifests(&self, config: &str) {
        let r = self.e.run_async(&["manifests", "-f", config]).await;
        assert_eq!(r.code, 0, "manifests: {}", r.all());
        let client = admin();
        for doc in serde_yaml::Deserializer::from_str(&r.stdout) {
            let obj: Value = serde::Deserialize::deserialize(doc).expect("manifest YAML");
            if obj.is_null() {
                continue;
            }
            let resp = apply(&client, &obj)
                .await
                .unwrap_or_else(|e| panic!("apply {}: {e}", obj["kind"]));
            assert!(
                resp.status < 300,
                "the real ApiServer refused {} {}: {} {}",
                obj["kind"],
                obj["metadata"]["name"],
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
    }

    /// `epcheck once -o json` with `config`; the report and the run.
    pub async fn once(&self, config: &str) -> (Value, util::Run) {
        let r = self
            .e
            .run_async(&["once", "-f", config, "-o", "json"])
            .await;
        let v = serde_json::from_str(&r.stdout).unwrap_or(Value::Null);
        (v, r)
    }
}

/// A running `epcheck run` (or any child) whose stderr lines are collected with the time each
/// arrived, so tests can order events of several processes on one clock.
pub struct Daemon {
    pub child: tokio::process::Child,
    lines: std::sync::Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Daemon {
    /// `epcheck run -f config` with `env`, logging at debug level.
    pub fn epcheck(s: &Scratch, config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = tokio::process::Command::from(s.e.cmd(&["run", "-f", config]));
        cmd.env("EPCHECK_LOG", "info,epcheck=debug,k8s_endpoints=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, true)
    }

    /// Spawns `cmd`, collecting stderr (or stdout when `stderr` is false) line by line.
    pub fn spawn(mut cmd: tokio::process::Command, stderr: bool) -> Daemon {
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, BufReader};
        if stderr {
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        }
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let out: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if stderr {
            Box::new(child.stderr.take().expect("stderr"))
        } else {
            Box::new(child.stdout.take().expect("stdout"))
        };
        tokio::spawn(async move {
            let mut reader = BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().expect("lock").push((Instant::now(), line));
            }
        });
        Daemon { child, lines }
    }

    /// Every line so far, with its arrival time.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().expect("lock").clone()
    }

    /// The whole log as text.
    pub fn log(&self) -> String {
        self.lines().into_iter().map(|(_, l)| l + "\n").collect()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|s| s.code())
    }
}

/// The usual set-up of a scenario.
pub struct WebService {
    /// The backends (the first `up` of `ips` listen on 18080).
    pub backends: Backends,
    /// The scratch directory with epcheck's token.
    pub s: Scratch,
    /// The config's path.
    pub cfg: String,
}

/// Kubernetes namespace `ns` with a selector-less Service `web` (port `serve` 8080), backends
/// on `ips` (the first `up` of them listening on 18080), and a config `c.yaml` for that one
/// service with `extra` top-level keys, whose manifests are applied through the real API.
pub async fn web_service(ns: &str, ips: &[String], up: usize, extra: &str) -> WebService {
    namespace(ns).await;
    service(ns, "web", &[("serve", 8080)]).await;
    let backends = Backends::default();
    for ip in &ips[..up] {
        backends.up(ip, 18080).await;
    }
    let s = Scratch::new();
    let cfg = s.config(
        "c.yaml",
        extra,
        &[Svc {
            key: "web",
            namespace: ns,
            name: "web",
            port: 18080,
            ips: ips.to_vec(),
        }],
    );
    s.apply_manifests(&cfg).await;
    WebService { backends, s, cfg }
}
