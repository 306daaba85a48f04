//! `reconcile` against the stand-in ApiServer: what reaches its request log for a create, an
//! unchanged pass, an update, a conflict, both body formats, a Service with a selector.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use fixtures::apiserver::{
    ApiServer, Fault, FaultRule, Permissions, RecordedRequest, Resource, StatusError,
};
use k8s_endpoints::client::{
    Client, ClientConfig, ReconcileAction, ReconcileMode, RetryPolicy, TokenSource, reconcile,
};
use k8s_endpoints::{
    ContentType, Endpoints, Error, NotReadyPolicy, Renderer, TokenLocation, codec,
};
use serde_json::{Value, json};

const TOKEN: &str = "epcheck-test-token-0123456789";
const EP_PATH: &str = "/api/v1/namespaces/default/endpoints/redis";

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn renderer() -> Renderer {
    let template: Endpoints = codec::from_yaml(
        "kind: Endpoints\napiVersion: v1\nmetadata: {name: ceph, namespace: default}\n\
         subsets:\n- addresses: [{ip: 10.0.0.71}]\n  ports: [{port: 6379, protocol: TCP}]\n",
    )
    .unwrap();
    Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep).unwrap()
}

fn config(api: &ApiServer, dir: &Path, content_type: ContentType) -> ClientConfig {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.token = TokenSource::File {
        location: TokenLocation::Path("token".into()),
        base_dir: dir.to_path_buf(),
    };
    cfg.ca_file = None;
    cfg.content_type = content_type;
    cfg.retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::REQUEST
    };
    cfg.conflict_retry = RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::CONFLICT
    };
    cfg
}

async fn setup(content_type: ContentType) -> (ApiServer, tempfile::TempDir, Client) {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, Permissions::epcheck("default", ["redis"]));
    api.put_service("default", "redis");
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(config(&api, dir.path(), content_type)).unwrap();
    (api, dir, client)
}

fn summaries(reqs: &[RecordedRequest]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.status))
        .collect()
}

fn stored(api: &ApiServer) -> Value {
    api.get_object(Resource::Endpoints, "default", "redis")
        .expect("the object is stored")
}

fn addresses(obj: &Value, key: &str) -> Vec<String> {
    obj["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s[key].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn first_reconcile_creates_with_a_named_put() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.2", "198.51.100.1"]),
        &ips(&["198.51.100.3"]),
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Created);
    assert_eq!(out.conflicts, 0);
    assert!(out.service.is_some());
    assert_eq!(
        out.diff.to_string(),
        "+198.51.100.1 +198.51.100.2 +198.51.100.3(not ready) ports +6379/TCP"
    );

    let reqs = api.requests();
    assert_eq!(
        summaries(&reqs),
        [
            "GET /api/v1/namespaces/default/services/redis Some(200)",
            "GET /api/v1/namespaces/default/endpoints/redis Some(404)",
            "PUT /api/v1/namespaces/default/endpoints/redis Some(201)",
        ]
    );
    let put = &reqs[2];
    assert_eq!(put.content_type.as_deref(), Some("application/yaml"));
    assert_eq!(put.accept.as_deref(), Some("application/json"));
    assert!(put.user_agent.as_deref().unwrap().starts_with("epcheck/"));
    assert_eq!(put.user(), Some(fixtures::apiserver::DEFAULT_USER));
    let body = put.body_json().unwrap();
    assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "epcheck"
    );
    // What the ApiServer holds is what was rendered.
    let obj = stored(&api);
    assert_eq!(
        addresses(&obj, "addresses"),
        ["198.51.100.1", "198.51.100.2"]
    );
    assert_eq!(addresses(&obj, "notReadyAddresses"), ["198.51.100.3"]);
    assert_eq!(
        out.object.metadata.resource_version.as_deref(),
        obj["metadata"]["resourceVersion"].as_str()
    );
    // One pooled connection for all three.
    assert!(reqs.iter().all(|r| r.connection == reqs[0].connection));
}

#[tokio::test]
async fn unchanged_second_run_writes_nothing() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    let (ready, down) = (ips(&["198.51.100.1"]), ips(&["198.51.100.9"]));
    reconcile(&client, &renderer(), &ready, &down, ReconcileMode::Apply)
        .await
        .unwrap();
    api.clear_requests();
    let out = reconcile(&client, &renderer(), &ready, &down, ReconcileMode::Apply)
        .await
        .unwrap();
    assert_eq!(out.action, ReconcileAction::Unchanged);
    assert!(out.diff.is_empty());
    assert!(api.writes().is_empty(), "{:?}", summaries(&api.requests()));
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn changed_targets_make_one_put_with_the_live_resource_version() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1", "198.51.100.2"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let rv = stored(&api)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    api.clear_requests();

    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &ips(&["198.51.100.2"]),
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Updated);
    assert_eq!(
        out.diff.to_string(),
        "-198.51.100.2 +198.51.100.2(not ready)"
    );
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "{:?}", summaries(&writes));
    assert_eq!(writes[0].method, "PUT");
    assert_eq!(writes[0].path, EP_PATH);
    assert_eq!(writes[0].status, Some(200));
    let body = writes[0].body_json().unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], json!(rv));
    let obj = stored(&api);
    assert_eq!(addresses(&obj, "addresses"), ["198.51.100.1"]);
    assert_eq!(addresses(&obj, "notReadyAddresses"), ["198.51.100.2"]);
}

#[tokio::test]
async fn concurrent_modification_ends_in_one_successful_retry() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    api.clear_requests();
    // Another writer bumps the object between our GET and our PUT.
    api.push_fault(FaultRule::new(Fault::ConcurrentWrite).method("PUT"));
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.4"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Updated);
    assert_eq!(out.conflicts, 1);
    let writes = api.writes();
    assert_eq!(
        writes.iter().map(|w| w.status).collect::<Vec<_>>(),
        [Some(409), Some(200)],
        "{:?}",
        summaries(&api.requests())
    );
    // The second PUT carries the version re-read after the conflict.
    let rv = |r: &RecordedRequest| r.body_json().unwrap()["metadata"]["resourceVersion"].clone();
    assert_ne!(rv(&writes[0]), rv(&writes[1]));
    let gets = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == EP_PATH)
        .count();
    assert_eq!(gets, 2);
    assert_eq!(addresses(&stored(&api), "addresses"), ["198.51.100.4"]);
}

#[tokio::test]
async fn endless_conflicts_give_up_with_a_clear_error() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    api.clear_requests();
    api.push_fault(
        FaultRule::new(Fault::ConcurrentWrite)
            .method("PUT")
            .always(),
    );
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.4"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::ConflictRetriesExhausted { attempts: 4, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("default/redis"), "{err}");
    assert_eq!(api.writes().len(), 4);
}

#[tokio::test]
async fn json_bodies_work_too() {
    let (api, _dir, client) = setup(ContentType::Json).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.2"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Updated);
    let writes = api.writes();
    assert_eq!(writes.len(), 2);
    for w in &writes {
        assert_eq!(w.content_type.as_deref(), Some("application/json"));
        // Real JSON, not YAML that happens to parse.
        serde_json::from_slice::<Value>(&w.body).unwrap();
    }
    assert_eq!(addresses(&stored(&api), "addresses"), ["198.51.100.2"]);
}

#[tokio::test]
async fn yaml_bodies_are_yaml() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let put = &api.writes()[0];
    assert!(serde_json::from_slice::<Value>(&put.body).is_err());
    assert!(String::from_utf8_lossy(&put.body).contains("kind: Endpoints"));
}

#[tokio::test]
async fn post_is_the_fallback_when_put_create_is_refused() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    api.push_fault(
        FaultRule::new(Fault::Status(StatusError::method_not_supported(
            Resource::Endpoints.group_resource(),
            "create on update",
        )))
        .method("PUT"),
    );
    // POST cannot be restricted by name, so this token needs a plain create.
    api.add_token(TOKEN, Permissions::all());
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Created);
    let writes = api.writes();
    assert_eq!(
        summaries(&writes),
        [
            "PUT /api/v1/namespaces/default/endpoints/redis Some(405)",
            "POST /api/v1/namespaces/default/endpoints Some(201)",
        ]
    );
    assert_eq!(addresses(&stored(&api), "addresses"), ["198.51.100.1"]);
}

#[tokio::test]
async fn a_service_with_a_selector_is_refused() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    api.put_service_with_selector("default", "redis", [("app", "redis")]);
    let err = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::SelectorOwned { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("Service default/redis has a selector (app=redis)"),
        "{msg}"
    );
    assert!(msg.contains("endpoints controller"), "{msg}");
    assert!(api.writes().is_empty());
    assert_eq!(api.requests().len(), 1, "only the Service was read");
}

#[tokio::test]
async fn a_missing_service_is_allowed() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    api.delete_object(Resource::Services, "default", "redis");
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Created);
    assert!(out.service.is_none());
}

#[tokio::test]
async fn dry_run_reads_and_writes_nothing() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::DryRun,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::WouldCreate);
    assert!(api.writes().is_empty());
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    api.clear_requests();
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.2"]),
        &[],
        ReconcileMode::DryRun,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::WouldUpdate);
    assert_eq!(out.diff.to_string(), "+198.51.100.2 -198.51.100.1");
    assert!(api.writes().is_empty());
    assert_eq!(addresses(&stored(&api), "addresses"), ["198.51.100.1"]);
}

#[tokio::test]
async fn what_epcheck_does_not_own_survives_an_update() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    api.insert_object(
        Resource::Endpoints,
        "default",
        json!({"metadata": {"name": "redis", "labels": {"team": "cache"},
                            "annotations": {"note": "hand-made"}},
               "subsets": [{"addresses": [{"ip": "198.51.100.1", "hostname": "node-1"}],
                            "ports": [{"name": "redis", "port": 6380, "protocol": "TCP"}]}]}),
    );
    let out = reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1", "198.51.100.2"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    assert_eq!(out.action, ReconcileAction::Updated);
    let obj = stored(&api);
    assert_eq!(obj["metadata"]["labels"]["team"], "cache");
    assert_eq!(
        obj["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "epcheck"
    );
    assert_eq!(obj["metadata"]["annotations"]["note"], "hand-made");
    assert_eq!(obj["subsets"][0]["addresses"][0]["hostname"], "node-1");
    // The live ports win over the template's.
    assert_eq!(obj["subsets"][0]["ports"][0]["port"], 6380);
    assert_eq!(api.writes().len(), 1);
}

#[tokio::test]
async fn no_target_at_all_writes_empty_subsets() {
    let (api, _dir, client) = setup(ContentType::Yaml).await;
    reconcile(
        &client,
        &renderer(),
        &ips(&["198.51.100.1"]),
        &[],
        ReconcileMode::Apply,
    )
    .await
    .unwrap();
    let out = reconcile(&client, &renderer(), &[], &[], ReconcileMode::Apply)
        .await
        .unwrap();
    assert_eq!(out.action, ReconcileAction::Updated);
    let obj = stored(&api);
    assert!(obj["subsets"].as_array().is_none_or(Vec::is_empty), "{obj}");
}

/// A reply that names another object than the one asked for is refused before anything is
/// written from it (SPEC §13): the URL of a write comes from the config alone.
#[tokio::test]
async fn a_reply_naming_another_object_writes_nothing() {
    let (api, _dir, client) = setup(ContentType::Json).await;
    // Allowed everywhere, so a write that went astray would succeed.
    api.add_token(TOKEN, Permissions::all());
    let seed = |ns: &str| {
        api.insert_object(
            Resource::Endpoints,
            ns,
            json!({"metadata": {"name": "redis", "labels": {"app.kubernetes.io/managed-by": "epcheck"}},
                   "subsets": [{"addresses": [{"ip": "198.51.100.9"}], "ports": [{"port": 6379, "protocol": "TCP"}]}]}),
        )
    };
    seed("default");
    let victim = seed("kube-system");
    let (renderer, ready) = (renderer(), ips(&["198.51.100.1"]));
    let run = || reconcile(&client, &renderer, &ready, &[], ReconcileMode::Apply);
    for (patch, got) in [
        (
            json!({"namespace": "kube-system"}),
            "Endpoints kube-system/redis",
        ),
        (json!({"name": "kube-dns"}), "Endpoints default/kube-dns"),
    ] {
        api.clear_requests();
        api.push_fault(
            FaultRule::new(Fault::RewriteMetadata(patch))
                .method("GET")
                .path_contains("/endpoints/"),
        );
        let err = run().await.unwrap_err();
        assert!(matches!(err, Error::UnexpectedObject { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "asked for Endpoints default/redis but the ApiServer's reply is {got}"
            )),
            "{msg}"
        );
        assert!(msg.contains("nothing was written"), "{msg}");
        assert!(api.writes().is_empty(), "{:?}", summaries(&api.writes()));
    }
    // Another kind is refused the same way.
    api.push_fault(
        FaultRule::new(Fault::RewriteReply(json!({"kind": "Secret"})))
            .method("GET")
            .path_contains("/endpoints/"),
    );
    let msg = run().await.unwrap_err().to_string();
    assert!(msg.contains("reply is Secret default/redis"), "{msg}");
    // So is a Service reply for another Service (its selector would decide ownership).
    api.push_fault(
        FaultRule::new(Fault::RewriteMetadata(json!({"name": "other"})))
            .path_contains("/services/"),
    );
    let msg = run().await.unwrap_err().to_string();
    assert!(msg.contains("asked for Service default/redis"), "{msg}");
    assert!(api.writes().is_empty());
    assert_eq!(
        api.get_object(Resource::Endpoints, "kube-system", "redis"),
        Some(victim)
    );
    // Without the fault the configured object is written, and only it.
    run().await.unwrap();
    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].path, EP_PATH);
}
