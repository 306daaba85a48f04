//! The embedding example (`examples/keep_endpoints.rs`) does the whole job against the stand-in
//! ApiServer and loopback targets: with the memory store, and with a real `redis-server`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Permissions, Resource, endpoint_ips};
use fixtures::redis::RedisServer;
use fixtures::targets::ToggleTarget;

const TOKEN: &str = "embedding-token";

/// The example's binary: `cargo test` builds the package's examples next to its test binaries.
fn example() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("examples").join("keep_endpoints")
}

/// Runs the example for a few seconds over two targets, the second refusing, and returns the
/// Endpoints object it kept.
async fn run_example(redis: Option<&str>) -> serde_json::Value {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "web");
    let mut targets = ToggleTarget::start_group(2).await.unwrap();
    targets[1].refuse().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut cmd = tokio::process::Command::new(example());
    cmd.args(["--url", &api.url(), "--token-file", token.to_str().unwrap()])
        .args([
            "--service",
            "default/web",
            "--port",
            "8080",
            "--seconds",
            "4",
        ])
        .args(targets.iter().map(|t| t.addr().to_string()))
        .kill_on_drop(true);
    if let Some(address) = redis {
        cmd.args(["--redis", address]);
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the example stops by itself")
        .expect("the example runs (built by cargo test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    api.get_object(Resource::Endpoints, "default", "web")
        .expect("the example wrote the Endpoints object")
}

fn check(endpoints: &serde_json::Value) {
    let ips = |key| endpoint_ips(endpoints, key);
    assert_eq!(ips("addresses").len(), 1, "{endpoints:#}");
    assert_eq!(ips("notReadyAddresses").len(), 1, "{endpoints:#}");
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        endpoints["metadata"]["labels"]["epcheck.io/instance"],
        "epcheck"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_keeps_endpoints_with_the_memory_store() {
    check(&run_example(None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_keeps_endpoints_with_redis() {
    let Some(redis) = RedisServer::start().unwrap() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is missing under CI"
        );
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    check(&run_example(Some(&redis.address())).await);
    // The state is in Redis: what was written, for the next run to start from.
    let store = state_store::RedisStore::connect(state_store::RedisOptions::new(redis.address()))
        .await
        .unwrap();
    let applied = state_store::StateStore::load_applied(&store, "web")
        .await
        .unwrap()
        .expect("the applied record is in Redis");
    assert_eq!(applied.ready.len(), 1, "{applied:?}");
}

/// The whole job stays a short program: the library does the work.
#[test]
fn the_example_is_under_80_lines() {
    let lines = include_str!("../examples/keep_endpoints.rs")
        .lines()
        .count();
    assert!(lines < 80, "examples/keep_endpoints.rs has {lines} lines");
}
