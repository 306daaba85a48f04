//! The bearer token against the stand-in ApiServer (SPEC §4): a token file replaced on disk is
//! picked up without a restart, a `401` re-reads it at once and retries once, a failed re-read
//! keeps the last good token, and the token never reaches a log, an error or `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Credential, Permissions};
use k8s_endpoints::client::{
    ApiErrorKind, Client, ClientConfig, ReconcileMode, RetryPolicy, TokenSource, reconcile,
};
use k8s_endpoints::{Endpoints, NotReadyPolicy, Renderer, TokenLocation, codec};

const OLD: &str = "token-old-0a1b2c3d4e5f";
const NEW: &str = "token-new-9f8e7d6c5b4a";

fn config(api: &ApiServer, dir: &Path, refresh: Duration) -> ClientConfig {
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.token = TokenSource::File {
        location: TokenLocation::Path("sa/token".into()),
        base_dir: dir.to_path_buf(),
    };
    cfg.ca_file = None;
    cfg.refresh_period = refresh;
    cfg.retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::REQUEST
    };
    cfg
}

fn write_token(dir: &Path, token: &str) {
    std::fs::create_dir_all(dir.join("sa")).unwrap();
    // Written aside and renamed in, as the kubelet's atomic writer does.
    let tmp = dir.join("sa/.token.tmp");
    std::fs::write(&tmp, format!("  {token}\n")).unwrap();
    std::fs::rename(tmp, dir.join("sa/token")).unwrap();
}

fn user(api: &ApiServer, i: usize) -> Option<String> {
    api.requests()[i].user().map(str::to_owned)
}

#[tokio::test]
async fn a_replaced_token_file_is_picked_up_without_a_restart() {
    let api = ApiServer::start().await.unwrap();
    api.add_user_token(OLD, "old-user", Permissions::all());
    api.add_user_token(NEW, "new-user", Permissions::all());
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), OLD);
    let client = Client::new(config(&api, dir.path(), Duration::from_millis(100))).unwrap();

    client.get_endpoints("default", "redis").await.unwrap();
    write_token(dir.path(), NEW);
    // Before the period is over the old token is still used.
    client.get_endpoints("default", "redis").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    client.get_endpoints("default", "redis").await.unwrap();

    assert_eq!(user(&api, 0).as_deref(), Some("old-user"));
    assert_eq!(user(&api, 1).as_deref(), Some("old-user"));
    assert_eq!(user(&api, 2).as_deref(), Some("new-user"));
    assert_eq!(api.requests().len(), 3, "no 401 on the way");
}

#[tokio::test]
async fn a_401_rereads_the_token_at_once_and_retries_once() {
    let api = ApiServer::start().await.unwrap();
    api.add_token(OLD, Permissions::all());
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), OLD);
    // A long period: only the 401 can make the client re-read.
    let client = Client::new(config(&api, dir.path(), Duration::from_secs(3600))).unwrap();
    client.get_endpoints("default", "redis").await.unwrap();

    // Rotation: the server forgets the old token, the file gets the new one.
    api.remove_token(OLD);
    api.add_token(NEW, Permissions::all());
    write_token(dir.path(), NEW);
    client.get_endpoints("default", "redis").await.unwrap();

    let reqs = api.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].status, Some(401));
    assert_eq!(reqs[1].credential, Credential::Bearer { user: None });
    assert_eq!(reqs[2].status, Some(404));
    assert!(reqs[2].user().is_some());
}

#[tokio::test]
async fn a_401_that_stays_names_the_token_file() {
    let api = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), OLD);
    let client = Client::new(config(&api, dir.path(), Duration::from_secs(3600))).unwrap();
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    assert_eq!(err.api_kind(), Some(ApiErrorKind::Unauthorized));
    let msg = err.to_string();
    let path = dir.path().join("sa/token");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("also after re-reading the file and retrying once"),
        "{msg}"
    );
    assert!(!msg.contains(OLD), "{msg}");
    assert!(!format!("{err:?}").contains(OLD));
    assert_eq!(api.requests().len(), 2, "exactly one retry");
}

#[tokio::test]
async fn a_failed_reread_keeps_the_last_good_token() {
    let api = ApiServer::start().await.unwrap();
    api.add_token(OLD, Permissions::all());
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), OLD);
    let client = Client::new(config(&api, dir.path(), Duration::from_millis(50))).unwrap();
    std::fs::remove_file(dir.path().join("sa/token")).unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    client.get_endpoints("default", "redis").await.unwrap();
    std::fs::write(dir.path().join("sa/token"), "   \n").unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    client.get_endpoints("default", "redis").await.unwrap();
    assert!(api.requests().iter().all(|r| r.status == Some(404)));
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
async fn the_token_never_reaches_the_log() {
    let (buf, _capture) = capture(tracing::Level::TRACE);

    let api = ApiServer::start().await.unwrap();
    api.add_token(OLD, Permissions::epcheck("default", ["redis"]));
    api.put_service("default", "redis");
    let dir = tempfile::tempdir().unwrap();
    write_token(dir.path(), OLD);
    let client = Client::new(config(&api, dir.path(), Duration::from_millis(20))).unwrap();
    tracing::debug!(client = ?client, "built");

    let template: Endpoints =
        codec::from_yaml("kind: Endpoints\napiVersion: v1\nsubsets:\n- ports: [{port: 6379}]\n")
            .unwrap();
    let renderer =
        Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let ready: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
    reconcile(&client, &renderer, &ready, &[], ReconcileMode::Apply)
        .await
        .unwrap();

    // Rotation to a token the server does not know, a failed re-read, a 401 error.
    std::fs::remove_file(dir.path().join("sa/token")).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    client.get_endpoints("default", "redis").await.unwrap();
    write_token(dir.path(), NEW);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    tracing::error!(error = %err, debug = ?err, "as the daemon would log it");

    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("re-reading the bearer token failed"), "{log}");
    assert!(log.contains("401"), "{log}");
    for token in [OLD, NEW] {
        assert!(
            !log.contains(token),
            "the token {token} is in the log:\n{log}"
        );
        assert!(!format!("{err:?} {err}").contains(token));
    }
}
