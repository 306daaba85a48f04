//! How the client meets the ApiServer's errors (SPEC §5.5), checked against the stand-in's
//! request log: 403, 404, 415, 422 and 500 give the errors SPEC describes, 429 honours
//! `Retry-After`, a body that is not a `Status` does no harm. Transport failures are in
//! `client_transport.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, Resource, Rule, Verb};
use k8s_endpoints::client::{
    ApiErrorKind, Client, ClientConfig, ReconcileMode, RetryPolicy, TokenSource, reconcile,
};
use k8s_endpoints::{Endpoints, NotReadyPolicy, Renderer, TokenLocation, codec};
use serde_json::json;

const TOKEN: &str = "epcheck-errors-token-abcdef";

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
    assert!(msg.contains("`epcheck manifests` prints one"), "{msg}");
    assert!(
        !msg.contains("SPEC"),
        "a message cites a document users do not have: {msg}"
    );
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

#[tokio::test]
async fn create_without_create_permission_tries_put_then_post_and_says_why() {
    let no_create = Permissions::none()
        .with(
            Rule::allow(&[Verb::Get, Verb::Update], Resource::Endpoints)
                .in_namespace("default")
                .named(["redis"]),
        )
        .with(Rule::allow(&[Verb::Get], Resource::Services).in_namespace("default"));
    let (api, _dir, client) = setup(no_create).await;
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    assert_eq!(err.api_kind(), Some(ApiErrorKind::Forbidden), "{err}");
    let writes: Vec<_> = api
        .writes()
        .iter()
        .map(|r| (r.method.to_string(), r.status))
        .collect();
    assert_eq!(
        writes,
        [
            ("PUT".to_owned(), Some(403)),
            ("POST".to_owned(), Some(403))
        ]
    );
    let msg = err.to_string();
    assert!(
        msg.contains("may not create endpoints in namespace \"default\""),
        "{msg}"
    );
    assert!(msg.contains("restricted by resourceNames"), "{msg}");
}

#[tokio::test]
async fn unsupported_media_type_points_at_content_type() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(
        FaultRule::new(Fault::Status(
            fixtures::apiserver::StatusError::unsupported_media_type(&["application/json"]),
        ))
        .method("PUT"),
    );
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.api_kind(),
        Some(ApiErrorKind::UnsupportedMediaType),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("set content_type to application/json"),
        "{msg}"
    );
    assert_eq!(api.writes().len(), 1);
}

/// With the clock paused, a long `Retry-After` costs no real time, and the wait is cut to
/// the policy's cap (10 s).
#[tokio::test(start_paused = true)]
async fn a_long_retry_after_is_capped() {
    let (api, _dir, client) = setup(Permissions::all()).await;
    api.push_fault(
        FaultRule::new(Fault::TooManyRequests {
            retry_after_secs: 3600,
        })
        .method("GET"),
    );
    let real = std::time::Instant::now();
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
    let reqs = api.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_secs(10) && gap < Duration::from_secs(11),
        "{gap:?}"
    );
    assert!(real.elapsed() < Duration::from_secs(5));
}
