//! How the client meets failures (SPEC §5.5), checked against the stand-in's request log:
//! 403, 404, 422 and 500 give the errors SPEC describes, 429 honours `Retry-After`, dropped
//! connections and timeouts are retried, refused connections are named, `Warning`s are logged
//! once, and every request reaches the observer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, Resource, Rule, Verb};
use k8s_endpoints::client::{
    ApiErrorKind, Client, ClientConfig, ReconcileMode, RequestObserver, RetryPolicy, TokenSource,
    TransportKind, reconcile,
};
use k8s_endpoints::{Endpoints, Error, NotReadyPolicy, Renderer, TokenLocation, codec};
use serde_json::json;

const TOKEN: &str = "epcheck-errors-token-abcdef";
const EP_PATH: &str = "/api/v1/namespaces/default/endpoints/redis";

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn renderer() -> Renderer {
    let template: Endpoints = codec::from_yaml(
        "kind: Endpoints\napiVersion: v1\nsubsets:\n- ports: [{port: 6379, protocol: TCP}]\n",
    )
    .unwrap();
    Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep).unwrap()
}

fn config(url: String, dir: &Path) -> ClientConfig {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let mut cfg = ClientConfig::from_url(url);
    cfg.token = TokenSource::File {
        location: TokenLocation::Path("token".into()),
        base_dir: dir.to_path_buf(),
    };
    cfg.ca_file = None;
    cfg.retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::REQUEST
    };
    cfg
}

async fn setup(permissions: Permissions) -> (ApiServer, tempfile::TempDir, Client) {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, permissions);
    api.put_service("default", "redis");
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(config(api.url(), dir.path())).unwrap();
    (api, dir, client)
}

fn seed(api: &ApiServer) {
    api.insert_object(
        Resource::Endpoints,
        "default",
        json!({"metadata": {"name": "redis"},
               "subsets": [{"addresses": [{"ip": "198.51.100.1"}], "ports": [{"port": 6379}]}]}),
    );
}

#[tokio::test]
async fn forbidden_names_verb_resource_namespace_and_rbac() {
    // May read, may not write.
    let read_only = Permissions::none()
        .with(Rule::allow(&[Verb::Get], Resource::Endpoints).in_namespace("default"))
        .with(Rule::allow(&[Verb::Get], Resource::Services).in_namespace("default"));
    let (api, _dir, client) = setup(read_only).await;
    seed(&api);
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.2"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    assert_eq!(err.api_kind(), Some(ApiErrorKind::Forbidden), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("PUT /api/v1/namespaces/default/endpoints/redis: 403 Forbidden"),
        "{msg}"
    );
    assert!(
        msg.contains("may not update endpoints \"redis\" in namespace \"default\""),
        "{msg}"
    );
    assert!(msg.contains("get, update and create"), "{msg}");
    assert!(msg.contains("SPEC §10"), "{msg}");
    // Not retried.
    assert_eq!(api.writes().len(), 1);
}

#[tokio::test]
async fn forbidden_service_read_says_services() {
    let no_services = Permissions::none().with(
        Rule::allow(
            &[Verb::Get, Verb::Update, Verb::Create],
            Resource::Endpoints,
        )
        .in_namespace("default"),
    );
    let (_api, _dir, client) = setup(no_services).await;
    let err = client.get_service("default", "redis").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("may not get services \"redis\" in namespace \"default\""),
        "{msg}"
    );
}

#[tokio::test]
async fn not_found_is_none_and_not_retried() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
    assert_eq!(client.get_service("default", "nope").await.unwrap(), None);
    let statuses: Vec<_> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(404), Some(404)]);
}

#[tokio::test]
async fn invalid_lists_each_cause_and_is_not_retried() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["127.0.0.1", "198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    let api_err = err.api().expect("an ApiServer error");
    assert_eq!(api_err.kind(), ApiErrorKind::Invalid);
    assert_eq!(api_err.code, 422);
    let causes = api_err.cause_lines();
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with("subsets[0].addresses[0].ip: ")),
        "{causes:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("422 Invalid"), "{msg}");
    assert!(msg.contains("loopback"), "{msg}");
    assert_eq!(api.writes().len(), 1, "one write, no retry loop");
    // Nothing was stored.
    assert!(
        api.get_object(Resource::Endpoints, "default", "redis")
            .is_none()
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(FaultRule::new(Fault::Status500).method("PUT").times(2));
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let statuses: Vec<_> = api.writes().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(201)]);
}

#[tokio::test]
async fn server_errors_surface_after_bounded_retries() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    seed(&api);
    api.push_fault(FaultRule::new(Fault::Status500).method("PUT").always());
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.2"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    let api_err = err.api().unwrap();
    assert_eq!(api_err.kind(), ApiErrorKind::ServerError);
    assert_eq!(api_err.attempts, 4);
    let msg = err.to_string();
    assert!(
        msg.contains("500 InternalError: Internal error occurred: etcdserver: request timed out"),
        "{msg}"
    );
    assert!(msg.contains("gave up after 4 attempts"), "{msg}");
    assert_eq!(api.writes().len(), 4);
    // The object was left as it was.
    let obj = api
        .get_object(Resource::Endpoints, "default", "redis")
        .unwrap();
    assert_eq!(obj["subsets"][0]["addresses"][0]["ip"], "198.51.100.1");
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(
        FaultRule::new(Fault::TooManyRequests {
            retry_after_secs: 1,
        })
        .method("GET"),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].status, Some(429));
    assert_eq!(reqs[1].status, Some(404));
    assert!(reqs[1].at - reqs[0].at >= Duration::from_millis(950));
}

#[tokio::test]
async fn plain_text_429_is_not_a_status_and_does_not_panic() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(
        FaultRule::new(Fault::TooManyRequestsPlain {
            retry_after_secs: 0,
        })
        .method("GET")
        .always(),
    );
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    let api_err = err.api().unwrap();
    assert_eq!(api_err.kind(), ApiErrorKind::TooManyRequests);
    assert_eq!(api_err.reason, "Too Many Requests");
    assert!(api_err.status.is_none());
    assert!(
        api_err
            .message
            .contains("Too many requests, please try again later.")
    );
    assert_eq!(api.requests().len(), 4);
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(FaultRule::new(Fault::DropConnection).method("PUT"));
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let writes = api.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].status, None, "the first PUT got no answer");
    assert_eq!(writes[1].status, Some(201));
    assert_ne!(
        writes[0].connection, writes[1].connection,
        "a new connection"
    );
}

#[tokio::test]
async fn dropped_every_time_is_a_transport_error() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(FaultRule::new(Fault::DropConnection).always());
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::ConnectionDropped,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("GET {}{EP_PATH}", api.url())),
        "{msg}"
    );
    assert_eq!(api.requests().len(), 4);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, Permissions::all());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(api.url(), dir.path());
    cfg.request_timeout = Duration::from_millis(300);
    let client = Client::new(cfg).unwrap();
    api.push_fault(FaultRule::new(Fault::Stall).method("GET"));
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
    api.push_fault(FaultRule::new(Fault::Stall).always());
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("longer than 300ms"), "{err}");
}

#[tokio::test]
async fn refused_connection_names_the_server() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(format!("http://127.0.0.1:{port}"), dir.path());
    cfg.retry = RetryPolicy::NONE;
    let client = Client::new(cfg).unwrap();
    let err = client.server_version().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::ConnectionRefused,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    let chain = std::error::Error::source(&err).unwrap().to_string();
    assert!(chain.to_lowercase().contains("refused"), "{chain}");
}

#[tokio::test]
async fn version_is_read() {
    let api = ApiServer::builder()
        .git_version("v1.21.14")
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(config(api.url(), dir.path())).unwrap();
    let v = client.server_version().await.unwrap();
    assert_eq!(v.git_version, "v1.21.14");
    assert_eq!(v.numbers(), Some((1, 21)));
    assert_eq!(v.not_ready_addresses_safe(), Some(false));
}

#[derive(Default)]
struct Counts(Mutex<Vec<(String, Option<u16>)>>);

impl RequestObserver for Counts {
    fn on_request(&self, verb: &str, code: Option<u16>, _duration: Duration) {
        self.0.lock().unwrap().push((verb.to_owned(), code));
    }
}

#[tokio::test]
async fn every_exchange_reaches_the_observer() {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "redis");
    let dir = tempfile::tempdir().unwrap();
    let counts = Arc::new(Counts::default());
    let client = Client::with_observer(config(api.url(), dir.path()), counts.clone()).unwrap();
    api.push_fault(FaultRule::new(Fault::DropConnection).method("PUT"));
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let seen = counts.0.lock().unwrap().clone();
    let expected: Vec<(String, Option<u16>)> = vec![
        ("GET".into(), Some(200)),
        ("GET".into(), Some(404)),
        ("PUT".into(), None),
        ("PUT".into(), Some(201)),
    ];
    assert_eq!(seen, expected);
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn warnings_are_logged_once_each() {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (api, _dir, client) = setup(Permissions::all()).await;
    for _ in 0..3 {
        client.get_endpoints("default", "redis").await.unwrap();
    }
    assert!(api.requests().iter().all(|r| !r.warnings.is_empty()));
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        log.matches("v1 Endpoints is deprecated").count(),
        1,
        "{log}"
    );
}
