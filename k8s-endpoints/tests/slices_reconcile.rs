//! `reconcile_slices` against the stand-in ApiServer (`mode: endpointslice`, SPEC §9): what
//! reaches its request log for a first run, an unchanged run, a changed target, a shrink, two
//! address families, races, and Services that must be refused. The addresses come from the
//! documentation ranges and are only data written to the stand-in; nothing is probed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use fixtures::apiserver::{
    ApiServer, Fault, FaultRule, Permissions, RecordedRequest, Resource, Rule, Verb,
};
use k8s_endpoints::client::{
    Client, ClientConfig, ReconcileAction, ReconcileMode, RetryPolicy, SlicesOutcome, TokenSource,
    reconcile_slices,
};
use k8s_endpoints::slices::{
    CONTROLLER_MANAGED_BY_VALUE, SERVICE_NAME_LABEL, SLICE_MANAGED_BY_LABEL,
    SLICE_MANAGED_BY_VALUE, SliceRenderer, SliceWriteKind,
};
use k8s_endpoints::{
    ContentType, EndpointPort, Endpoints, Error, NotReadyPolicy, SKIP_MIRROR_LABEL, Token,
    mark_skip_mirror,
};
use k8s_openapi::api::discovery::v1 as discovery;
use serde_json::Value;

const KEEP: NotReadyPolicy = NotReadyPolicy::Keep;
const DROP: NotReadyPolicy = NotReadyPolicy::Drop;
const APPLY: ReconcileMode = ReconcileMode::Apply;

const TOKEN: &str = "epcheck-slices-token-0123456789";
const COLLECTION: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// `198.51.100.0 + n` for n < 256, then on into 198.51.101.x (all documentation-range data).
fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC633_6400 + n))
}

fn v4s(range: std::ops::RangeInclusive<u32>) -> Vec<IpAddr> {
    range.map(v4).collect()
}

fn renderer(policy: NotReadyPolicy) -> SliceRenderer {
    let port = EndpointPort {
        name: Some("redis".into()),
        port: 6379,
        ..EndpointPort::default()
    };
    SliceRenderer::new("default", "redis", &[port], policy).unwrap()
}

/// Least privilege for this mode: slices in the namespace, `get` on services.
fn permissions() -> Permissions {
    let verbs = [
        Verb::Get,
        Verb::List,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
    ];
    let slices = Rule::allow(&verbs, Resource::EndpointSlices).in_namespace("default");
    let services = Rule::allow(&[Verb::Get], Resource::Services).in_namespace("default");
    Permissions::none().with(slices).with(services)
}

async fn setup() -> (ApiServer, Client) {
    let api = ApiServer::start().await.unwrap();
    api.add_token(TOKEN, permissions());
    api.put_service("default", "redis");
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.token = TokenSource::Static(Token::new(TOKEN));
    cfg.ca_file = None;
    cfg.content_type = ContentType::Json;
    let fast = |p: RetryPolicy| RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..p
    };
    cfg.retry = fast(RetryPolicy::REQUEST);
    cfg.conflict_retry = fast(RetryPolicy::CONFLICT);
    let client = Client::new(cfg).unwrap();
    (api, client)
}

async fn try_run(
    client: &Client,
    policy: NotReadyPolicy,
    ready: &[IpAddr],
    not_ready: &[IpAddr],
    mode: ReconcileMode,
) -> Result<SlicesOutcome, Error> {
    reconcile_slices(client, &renderer(policy), ready, not_ready, mode).await
}

async fn run(client: &Client, ready: &[IpAddr], not_ready: &[IpAddr]) -> SlicesOutcome {
    try_run(client, KEEP, ready, not_ready, APPLY)
        .await
        .unwrap()
}

/// A run with one ready target that must fail.
async fn refused(client: &Client) -> Error {
    try_run(client, KEEP, &[v4(1)], &[], APPLY)
        .await
        .unwrap_err()
}

fn summaries(reqs: &[RecordedRequest]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.status))
        .collect()
}

/// The stored slices, sorted by name, each as k8s-openapi's type (which must accept them).
fn stored(api: &ApiServer) -> Vec<discovery::EndpointSlice> {
    let mut out: Vec<discovery::EndpointSlice> = api
        .list_objects(Resource::EndpointSlices, Some("default"))
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    out.sort_by_key(|s| s.metadata.name.clone());
    out
}

fn sizes(slices: &[discovery::EndpointSlice]) -> Vec<String> {
    slices
        .iter()
        .map(|s| {
            let name = s.metadata.name.as_deref().unwrap();
            format!("{name} {} {}", s.address_type, s.endpoints.len())
        })
        .collect()
}

fn service_uid(api: &ApiServer) -> String {
    let svc = api
        .get_object(Resource::Services, "default", "redis")
        .unwrap();
    svc["metadata"]["uid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn first_run_creates_with_post_what_k8s_openapi_reads() {
    let (api, client) = setup().await;
    let out = run(&client, &[v4(2), v4(1)], &[v4(3)]).await;
    assert_eq!(out.action, ReconcileAction::Created);
    assert_eq!(
        out.diff.to_string(),
        "create redis-epcheck-ipv4-0 (IPv4): +198.51.100.1 +198.51.100.2 +198.51.100.3(not-ready)"
    );
    assert_eq!(
        summaries(&api.requests()),
        [
            "GET /api/v1/namespaces/default/services/redis Some(200)".to_owned(),
            format!("GET {COLLECTION} Some(200)"),
            format!("POST {COLLECTION} Some(201)"),
        ]
    );
    let list = &api.requests()[1];
    assert_eq!(
        list.query_param("labelSelector").as_deref(),
        Some("kubernetes.io/service-name=redis,endpointslice.kubernetes.io/managed-by=epcheck.io")
    );
    let post = &api.writes()[0];
    let body = post.body_json().unwrap();
    assert!(body["metadata"].get("resourceVersion").is_none(), "{body}");
    // The POST body itself is a valid k8s-openapi EndpointSlice.
    let _: discovery::EndpointSlice = serde_json::from_value(body).unwrap();

    let slices = stored(&api);
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(s.address_type, "IPv4");
    // Address, then ready/serving/terminating.
    let conds: Vec<String> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            let flags = [c.ready, c.serving, c.terminating].map(|b| b.unwrap().to_string());
            format!("{} {}", e.addresses[0], flags.join("/"))
        })
        .collect();
    assert_eq!(
        conds,
        [
            "198.51.100.1 true/true/false",
            "198.51.100.2 true/true/false",
            "198.51.100.3 false/false/false",
        ]
    );
    let ports = s.ports.clone().unwrap();
    assert_eq!(ports[0].port, Some(6379));
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(out.slices.len(), 1);
    assert_eq!(
        out.slices[0].metadata.resource_version,
        s.metadata.resource_version
    );
}

#[tokio::test]
async fn labels_and_owner_reference_are_set() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=120), &[]).await;
    let uid = service_uid(&api);
    for s in stored(&api) {
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "redis");
        assert_eq!(labels[SLICE_MANAGED_BY_LABEL], SLICE_MANAGED_BY_VALUE);
        assert_ne!(labels[SLICE_MANAGED_BY_LABEL], CONTROLLER_MANAGED_BY_VALUE);
        let owners = s.metadata.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("v1", "Service", "redis")
        );
        assert_eq!(o.uid, uid);
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, None);
    }
}

#[tokio::test]
async fn targets_become_slices_of_100_per_family() {
    let (api, client) = setup().await;
    let mut ready = v4s(1..=250);
    ready.push("2001:db8::1".parse().unwrap());
    let out = run(&client, &ready, &["2001:db8::2".parse().unwrap()]).await;
    assert_eq!(out.action, ReconcileAction::Created);
    assert_eq!(out.diff.count(SliceWriteKind::Create), 4);
    assert_eq!(
        sizes(&stored(&api)),
        [
            "redis-epcheck-ipv4-0 IPv4 100",
            "redis-epcheck-ipv4-1 IPv4 100",
            "redis-epcheck-ipv4-2 IPv4 50",
            "redis-epcheck-ipv6-0 IPv6 2",
        ]
    );
    assert!(api.writes().iter().all(|w| w.method == "POST"));
}

#[tokio::test]
async fn an_unchanged_second_run_writes_nothing() {
    let (api, client) = setup().await;
    let ready = v4s(1..=150);
    run(&client, &ready, &[v4(200)]).await;
    api.clear_requests();
    let out = run(&client, &ready, &[v4(200)]).await;
    assert_eq!(out.action, ReconcileAction::Unchanged);
    assert!(out.diff.is_empty());
    assert_eq!(out.diff.to_string(), "no change");
    assert!(api.writes().is_empty(), "{:?}", summaries(&api.requests()));
    assert_eq!(api.requests().len(), 2, "one GET of the Service, one list");
    assert_eq!(out.slices.len(), 2);
}

#[tokio::test]
async fn a_changed_target_updates_only_its_slice() {
    let (api, client) = setup().await;
    let ready = v4s(1..=250);
    run(&client, &ready, &[]).await;
    let before = stored(&api);
    api.clear_requests();

    // 198.51.100.150 starts failing; it lives in the second slice.
    let mut now_ready = ready.clone();
    now_ready.retain(|ip| *ip != v4(150));
    let out = run(&client, &now_ready, &[v4(150)]).await;
    assert_eq!(out.action, ReconcileAction::Updated);
    assert_eq!(
        out.diff.to_string(),
        "update redis-epcheck-ipv4-1 (IPv4): 198.51.100.150→not-ready"
    );
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "{:?}", summaries(&writes));
    assert_eq!(writes[0].method, "PUT");
    assert_eq!(writes[0].path, format!("{COLLECTION}/redis-epcheck-ipv4-1"));
    assert_eq!(writes[0].status, Some(200));
    let body = writes[0].body_json().unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"].as_str(),
        before[1].metadata.resource_version.as_deref()
    );
    let after = stored(&api);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[2], before[2]);
    assert_eq!(after[1].metadata.generation, Some(2));

    // A target replaced by another: still one slice.
    api.clear_requests();
    let mut swapped = now_ready;
    swapped.retain(|ip| *ip != v4(30));
    swapped.push(v4(251));
    run(&client, &swapped, &[v4(150)]).await;
    let writes = api.writes();
    assert_eq!(
        summaries(&writes),
        [format!("PUT {COLLECTION}/redis-epcheck-ipv4-0 Some(200)")]
    );
}

#[tokio::test]
async fn shrinking_updates_first_then_deletes_surplus() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=250), &[]).await;
    api.clear_requests();

    // Every fifth target stays: the survivors are spread over all three slices.
    let few: Vec<IpAddr> = (1..=250).step_by(5).map(v4).collect();
    let out = run(&client, &few, &[]).await;
    assert_eq!(out.action, ReconcileAction::Updated);
    let writes: Vec<String> = api
        .writes()
        .iter()
        .map(|w| format!("{} {}", w.method, w.path.trim_start_matches(COLLECTION)))
        .collect();
    assert_eq!(
        writes,
        [
            "PUT /redis-epcheck-ipv4-0",
            "DELETE /redis-epcheck-ipv4-1",
            "DELETE /redis-epcheck-ipv4-2",
        ]
    );
    let s = stored(&api);
    assert_eq!(sizes(&s), ["redis-epcheck-ipv4-0 IPv4 50"]);
    // At no point was a survivor missing: the update carried all 50 before any delete.
    let put = api.writes()[0].body_json().unwrap();
    assert_eq!(put["endpoints"].as_array().unwrap().len(), 50);
    assert_eq!(out.slices.len(), 1);
}

#[tokio::test]
async fn no_target_leaves_one_empty_slice() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=120), &[]).await;
    let out = run(&client, &[], &[]).await;
    assert_eq!(out.action, ReconcileAction::Updated);
    assert_eq!(sizes(&stored(&api)), ["redis-epcheck-ipv4-0 IPv4 0"]);
    // Dropped, not kept, with the drop policy.
    let out = try_run(&client, DROP, &[v4(1)], &[v4(2)], APPLY)
        .await
        .unwrap();
    assert_eq!(
        out.diff.to_string(),
        "update redis-epcheck-ipv4-0 (IPv4): +198.51.100.1"
    );
}

#[tokio::test]
async fn dry_run_reads_only() {
    let (api, client) = setup().await;
    let out = try_run(&client, KEEP, &v4s(1..=101), &[], ReconcileMode::DryRun)
        .await
        .unwrap();
    assert_eq!(out.action, ReconcileAction::WouldCreate);
    assert_eq!(out.diff.count(SliceWriteKind::Create), 2);
    assert_eq!(out.slices.len(), 2);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn a_service_with_a_selector_is_refused() {
    let (api, client) = setup().await;
    api.put_service_with_selector("default", "redis", [("app", "redis")]);
    let err = refused(&client).await;
    assert!(matches!(err, Error::SelectorOwned { .. }), "{err}");
    assert!(err.to_string().contains("app=redis"), "{err}");
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn a_service_that_gains_a_selector_loses_epcheck_slices_and_keeps_the_controllers() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=101), &[]).await;
    assert_eq!(stored(&api).len(), 2);
    // The Service gains a selector; the endpointslice controller writes its own slice.
    api.put_service_with_selector("default", "redis", [("app", "redis")]);
    api.insert_object(
        Resource::EndpointSlices,
        "default",
        serde_json::json!({"metadata": {"name": "redis-abcde", "labels": {
            SERVICE_NAME_LABEL: "redis", SLICE_MANAGED_BY_LABEL: CONTROLLER_MANAGED_BY_VALUE}},
            "addressType": "IPv4", "endpoints": []}),
    );
    // A dry run says what it would delete and deletes nothing.
    api.clear_requests();
    let err = try_run(&client, KEEP, &[v4(1)], &[], ReconcileMode::DryRun)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("would delete its own EndpointSlices for it (redis-epcheck-ipv4-0, redis-epcheck-ipv4-1)"),
        "{err}"
    );
    assert!(api.writes().is_empty());

    let err = refused(&client).await;
    assert!(err.is_selector_owned(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "deleted its own EndpointSlices for it (redis-epcheck-ipv4-0, redis-epcheck-ipv4-1)"
        ),
        "{msg}"
    );
    assert!(msg.contains("remove the selector"), "{msg}");
    let deletes: Vec<String> = api
        .writes()
        .iter()
        .map(|w| format!("{} {}", w.method, w.path))
        .collect();
    assert_eq!(
        deletes,
        [
            format!("DELETE {COLLECTION}/redis-epcheck-ipv4-0"),
            format!("DELETE {COLLECTION}/redis-epcheck-ipv4-1")
        ]
    );
    assert_eq!(sizes(&stored(&api)), ["redis-abcde IPv4 0"]);

    // Still owned: nothing more to delete, still refused.
    api.clear_requests();
    assert!(refused(&client).await.is_selector_owned());
    assert!(api.writes().is_empty());
    // The selector goes: epcheck manages the Service again.
    api.put_service("default", "redis");
    let out = run(&client, &[v4(1)], &[]).await;
    assert_eq!(out.action, ReconcileAction::Created);
}

#[tokio::test]
async fn a_missing_service_is_an_error() {
    let (api, client) = setup().await;
    api.delete_object(Resource::Services, "default", "redis");
    let err = refused(&client).await;
    assert!(matches!(err, Error::SliceServiceMissing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("EndpointSlice mode needs the Service default/redis to exist"),
        "{err}"
    );
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn a_recreated_service_gets_its_slices_re_owned() {
    let (api, client) = setup().await;
    run(&client, &[v4(1)], &[]).await;
    let old = service_uid(&api);
    api.delete_object(Resource::Services, "default", "redis");
    api.put_service("default", "redis");
    let new = service_uid(&api);
    assert_ne!(old, new);
    let out = run(&client, &[v4(1)], &[]).await;
    assert_eq!(
        out.diff.to_string(),
        "update redis-epcheck-ipv4-0 (IPv4): labels/owner"
    );
    let owners = stored(&api)[0].metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].uid, new);
}

#[tokio::test]
async fn races_are_re_read_and_retried() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=150), &[]).await;
    api.clear_requests();
    // Another writer touches the slice between our list and our PUT.
    api.push_fault(FaultRule::new(Fault::ConcurrentWrite).method("PUT"));
    let out = run(&client, &v4s(1..=149), &[]).await;
    assert_eq!(out.conflicts, 1);
    assert_eq!(out.action, ReconcileAction::Updated);
    let statuses: Vec<Option<u16>> = api.writes().iter().map(|w| w.status).collect();
    assert_eq!(statuses, [Some(409), Some(200)]);

    // A delete whose slice changed since it was read is refused by its precondition, then
    // retried with the new resourceVersion.
    api.clear_requests();
    api.push_fault(FaultRule::new(Fault::ConcurrentWrite).method("DELETE"));
    let out = run(&client, &v4s(1..=100), &[]).await;
    assert_eq!(out.conflicts, 1);
    let writes = summaries(&api.writes());
    assert_eq!(
        writes,
        [
            format!("DELETE {COLLECTION}/redis-epcheck-ipv4-1 Some(409)"),
            format!("DELETE {COLLECTION}/redis-epcheck-ipv4-1 Some(200)"),
        ]
    );
    assert_eq!(stored(&api).len(), 1);
}

#[tokio::test]
async fn a_slice_gone_before_its_delete_is_fine() {
    let (api, client) = setup().await;
    run(&client, &v4s(1..=150), &[]).await;
    // Someone else deletes the surplus slice after our list: DELETE gets 404, tolerated.
    let not_found = fixtures::apiserver::StatusError::not_found(
        Resource::EndpointSlices.group_resource(),
        "redis-epcheck-ipv4-1",
    );
    api.push_fault(FaultRule::new(Fault::Status(not_found)).method("DELETE"));
    let out = run(&client, &v4s(1..=100), &[]).await;
    assert_eq!(out.action, ReconcileAction::Updated);
    assert_eq!(out.conflicts, 0);
    assert_eq!(api.writes().last().unwrap().status, Some(404));
}

#[tokio::test]
async fn a_foreign_slice_with_our_name_is_reported() {
    let (api, client) = setup().await;
    let foreign: Value = serde_json::json!({
        "metadata": {"name": "redis-epcheck-ipv4-0", "labels": {"app": "other"}},
        "addressType": "IPv4", "endpoints": []});
    api.insert_object(Resource::EndpointSlices, "default", foreign);
    let err = refused(&client).await;
    assert!(
        matches!(err, Error::SliceConflictRetriesExhausted { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("<service>-epcheck-ipv4-<n>"),
        "{err}"
    );
}

#[tokio::test]
async fn forbidden_names_this_mode_s_rbac() {
    let (api, client) = setup().await;
    api.add_token(
        TOKEN,
        Permissions::none().with(Rule::allow(&[Verb::Get], Resource::Services)),
    );
    let err = refused(&client).await;
    let msg = err.to_string();
    assert!(msg.contains("may not list endpointslices"), "{msg}");
    assert!(msg.contains("discovery.k8s.io"), "{msg}");
}

#[test]
fn endpoints_of_a_slice_managed_service_skip_mirroring() {
    let mut ep = Endpoints::new("default", "redis");
    assert!(
        mark_skip_mirror(&mut ep),
        "missing: the live object needs a write"
    );
    assert_eq!(ep.metadata.labels[SKIP_MIRROR_LABEL], "true");
    assert!(!mark_skip_mirror(&mut ep));
}

/// A list reply holding a slice of another namespace, or one without epcheck's labels for the
/// Service, is refused before anything is written from it (SPEC §13).
#[tokio::test]
async fn a_list_holding_other_slices_writes_nothing() {
    let (api, client) = setup().await;
    run(&client, &[v4(1)], &[]).await;
    for (patch, got) in [
        (
            serde_json::json!({"namespace": "kube-system"}),
            "EndpointSlice kube-system/redis-epcheck-ipv4-0",
        ),
        (
            serde_json::json!({"labels": {SLICE_MANAGED_BY_LABEL: CONTROLLER_MANAGED_BY_VALUE}}),
            "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
        ),
        (
            serde_json::json!({"labels": {SERVICE_NAME_LABEL: null}}),
            "kubernetes.io/service-name=(none)",
        ),
    ] {
        api.clear_requests();
        api.push_fault(
            FaultRule::new(Fault::RewriteMetadata(patch))
                .method("GET")
                .path_contains("endpointslices"),
        );
        // A change is due, so a write would follow the list.
        let err = try_run(&client, KEEP, &[v4(2)], &[], APPLY)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnexpectedObject { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(got), "{msg}");
        assert!(
            msg.contains("asked for the EndpointSlices in namespace default labelled kubernetes.io/service-name=redis,endpointslice.kubernetes.io/managed-by=epcheck.io"),
            "{msg}"
        );
        assert!(api.writes().is_empty(), "{:?}", summaries(&api.writes()));
    }
    api.push_fault(
        FaultRule::new(Fault::RewriteReply(
            serde_json::json!({"kind": "SecretList"}),
        ))
        .method("GET")
        .path_contains("endpointslices"),
    );
    let err = try_run(&client, KEEP, &[v4(2)], &[], APPLY)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a SecretList instead of an EndpointSliceList"),
        "{err}"
    );
    assert!(api.writes().is_empty());
    // The reply to a write is checked too.
    api.push_fault(
        FaultRule::new(Fault::RewriteMetadata(serde_json::json!({"name": "x"}))).method("PUT"),
    );
    let err = try_run(&client, KEEP, &[v4(2)], &[], APPLY)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("asked for EndpointSlice default/redis-epcheck-ipv4-0 but the ApiServer's reply is EndpointSlice default/x"),
        "{err}"
    );
}
