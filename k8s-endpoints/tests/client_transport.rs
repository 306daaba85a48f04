//! Below HTTP, against the stand-in ApiServer: dropped connections and timeouts are retried
//! and then named, a refused connection names the server, every exchange reaches the
//! observer, and the ApiServer's `Warning`s are logged once each.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions};
use k8s_endpoints::client::{
    Client, ClientConfig, ReconcileMode, RequestObserver, RetryPolicy, TokenSource, TransportKind,
    reconcile,
};
use k8s_endpoints::{Endpoints, Error, NotReadyPolicy, Renderer, TokenLocation, codec};

const TOKEN: &str = "epcheck-transport-token-123456";
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

#[derive(Default)]
struct Counts(Mutex<Vec<(String, Option<u16>)>>);

impl RequestObserver for Counts {
    fn on_request(&self, verb: &str, code: Option<u16>, _duration: Duration) {
        self.0.lock().unwrap().push((verb.to_owned(), code));
    }
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

/// Installs a subscriber writing to a buffer, for this thread only.
///
/// A second, idle dispatcher is registered alongside: with a single scoped dispatcher,
/// tracing-core computes the interest of a callsite first hit on *another* test's thread
/// from that thread's (empty) default and caches "never", so events of this test would be
/// lost whenever a parallel test reached the same line first.
fn capture(
    level: tracing::Level,
) -> (
    Buffer,
    (tracing::subscriber::DefaultGuard, tracing::Dispatch),
) {
    let buf = Buffer::default();
    let writer = buf.clone();
    let idle = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(level)
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    (buf, (guard, idle))
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

#[tokio::test]
async fn warnings_are_logged_once_each() {
    let (buf, _capture) = capture(tracing::Level::WARN);
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

#[tokio::test]
async fn an_oversized_response_is_refused() {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "redis");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(api.url(), dir.path());
    cfg.max_response_bytes = 64;
    let client = Client::new(cfg).unwrap();
    let err = client.get_service("default", "redis").await.unwrap_err();
    assert!(matches!(err, Error::InvalidResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than 64 bytes"), "{err}");
    assert_eq!(api.requests().len(), 1, "not retried");
}
