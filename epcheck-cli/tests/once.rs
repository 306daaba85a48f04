//! `epcheck once [--dry-run]` against the stand-in ApiServer and loopback targets.

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, Resource, StatusError};
use fixtures::targets::{AcceptingTarget, ToggleTarget};

use crate::util::{Epcheck, web_config};

const TOKEN: &str = "once-test-token-5f1e";

/// A config for one service `web` in `default` with targets 127.0.0.1 and 127.0.0.2 on `port`.
fn config(url: &str, port: u16, content_type: &str) -> String {
    let top = format!(
        "interval: 2000\npingtimeout: 500\nurl: {url}\n\
         endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints\n\
         content_type: {content_type}\ntoken_file: ./sa/token"
    );
    web_config(&top, port, &["127.0.0.1".into(), "127.0.0.2".into()])
}

async fn setup(content_type: &str) -> (ApiServer, Epcheck, ToggleTarget, String) {
    // The targets are loopback addresses, which a real ApiServer rejects: relax the stand-in.
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "web");
    let target = ToggleTarget::start().await.unwrap();
    let e = Epcheck::new();
    e.write("sa/token", &format!("{TOKEN}\n"));
    let path = e.write(
        "c.yaml",
        &config(&api.url(), target.addr().port(), content_type),
    );
    (api, e, target, path.to_str().unwrap().to_string())
}

fn ready_ips(api: &ApiServer) -> Vec<String> {
    let obj = api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    obj["subsets"][0]["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["ip"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_unchanged_then_one_update() {
    let (api, e, mut target, cfg) = setup("application/yaml").await;

    let r = e.run_async(&["once", "-f", &cfg, "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "created");
    assert_eq!(ready_ips(&api), ["127.0.0.1"]);
    let writes = api.writes();
    assert_eq!(
        writes.len(),
        1,
        "{:?}",
        writes.iter().map(|w| w.summary()).collect::<Vec<_>>()
    );
    assert_eq!(writes[0].method, "PUT");
    assert_eq!(writes[0].content_type.as_deref(), Some("application/yaml"));

    // Unchanged: no write at all.
    api.clear_requests();
    let r = e.run_async(&["once", "-f", &cfg, "-o", "json"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "unchanged");
    assert!(api.writes().is_empty());

    // The target goes down: exactly one PUT, carrying the live resourceVersion.
    let rv = api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    target.refuse().await;
    api.clear_requests();
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("updated"), "{}", r.stdout);
    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "PUT");
    let body = writes[0].body_json().unwrap();
    assert_eq!(body["metadata"]["resourceVersion"], rv.as_str());
    assert!(ready_ips(&api).is_empty());
    // No log line or report carries the token.
    assert!(!r.all().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_and_dry_run() {
    let (api, e, _target, cfg) = setup("application/json").await;
    let r = e
        .run_async(&["once", "--dry-run", "-f", &cfg, "-o", "json"])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "would-create");
    assert_eq!(v["services"][0]["ready"], serde_json::json!(["127.0.0.1"]));
    assert!(api.writes().is_empty(), "a dry run wrote");

    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let writes = api.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].content_type.as_deref(), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_selector_is_not_taken_over() {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service_with_selector("default", "web", [("app", "web")]);
    let target = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    e.write("sa/token", TOKEN);
    let path = e.write(
        "c.yaml",
        &config(&api.url(), target.addr().port(), "application/yaml"),
    );
    let r = e
        .run_async(&["once", "-f", path.to_str().unwrap(), "-o", "json"])
        .await;
    assert_eq!(r.code, 1, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["services"][0]["action"], "failed");
    assert!(
        v["services"][0]["error"]
            .as_str()
            .unwrap()
            .contains("selector"),
        "{}",
        r.stdout
    );
    assert!(api.writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_names_the_rbac() {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::none());
    let target = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    e.write("sa/token", TOKEN);
    let path = e.write(
        "c.yaml",
        &config(&api.url(), target.addr().port(), "application/yaml"),
    );
    let r = e.run_async(&["once", "-f", path.to_str().unwrap()]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.all().contains("forbidden") || r.all().contains("Forbidden"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains(TOKEN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_before_1_22_get_failing_targets_dropped() {
    // kube-proxy before 1.22 mirrored notReadyAddresses into EndpointSlices as ready.
    let api = ApiServer::builder()
        .strict_ips(false)
        .git_version("v1.21.3")
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    api.put_service("default", "web");
    let target = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    e.write("sa/token", TOKEN);
    let path = e.write(
        "c.yaml",
        &config(&api.url(), target.addr().port(), "application/yaml"),
    );
    let r = e.run_async(&["once", "-f", path.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("1.22"), "{}", r.stderr);
    let obj = api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    assert!(
        obj["subsets"][0].get("notReadyAddresses").is_none(),
        "{obj}"
    );
    assert_eq!(ready_ips(&api), ["127.0.0.1"]);
}

/// A GET whose reply names another object (here: the same name in kube-system) is refused:
/// nothing is written, there or anywhere, and the report says what was asked and what came back
/// instead of "updated" (SPEC §13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_naming_another_object_is_not_written() {
    let (api, e, target, cfg) = setup("application/json").await;
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    api.insert_object(
        Resource::Endpoints,
        "kube-system",
        serde_json::json!({"metadata": {"name": "web"}, "subsets": []}),
    );
    let victim = api.get_object(Resource::Endpoints, "kube-system", "web");
    // Something to write: a second target comes up in the config.
    let top = format!(
        "interval: 2000\npingtimeout: 500\nurl: {}\ntoken_file: ./sa/token",
        api.url()
    );
    let port = target.addr().port();
    let cfg = e.write(
        "c2.yaml",
        &crate::util::web_config(&top, port, &["127.0.0.1".into(), "127.0.0.3".into()]),
    );
    api.clear_requests();
    api.push_fault(
        FaultRule::new(Fault::RewriteMetadata(
            serde_json::json!({"namespace": "kube-system"}),
        ))
        .method("GET")
        .path_contains("/endpoints/"),
    );
    let r = e.run_async(&["once", "-f", cfg.to_str().unwrap()]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout.contains("web (default/web): failed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(
            "asked for Endpoints default/web but the ApiServer's reply is Endpoints kube-system/web"
        ),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("updated"), "{}", r.stdout);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    assert_eq!(
        api.get_object(Resource::Endpoints, "kube-system", "web"),
        victim
    );
}

/// A Status message with a newline and terminal escape sequences reaches neither stderr nor
/// the text report raw: no forged log line, no escape sequence for the terminal (SPEC §13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_text_reaches_the_terminal_escaped() {
    let (api, e, _target, cfg) = setup("application/json").await;
    let mut status = StatusError::unknown(
        422,
        "bad\n2026-01-01T00:00:00Z  INFO forged: all good \u{1b}[2J\u{1b}]0;owned\u{7}",
    );
    status.reason = "Invalid";
    api.push_fault(FaultRule::new(Fault::Status(status)).method("PUT").times(3));
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    for (name, out) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{name} carries a raw escape: {out:?}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
            "{name} carries a forged line: {out}"
        );
        assert!(
            out.contains(
                r"bad\n2026-01-01T00:00:00Z  INFO forged: all good \x1b[2J\x1b]0;owned\x07"
            ),
            "{name}: {out}"
        );
    }
}

/// A template port whose name matches no port of the Service routes nothing: `once` says so,
/// naming the port and the Service's ports (SPEC §9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_port_the_service_does_not_have_is_warned_about() {
    let (api, e, _target, cfg) = setup("application/json").await;
    api.insert_object(
        Resource::Services,
        "default",
        serde_json::json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "metrics", "port": 9100, "protocol": "TCP"}]}}),
    );
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let warning = "endpoint port (unnamed) matches no port of Service default/web (its ports: http, metrics): kube-proxy routes nothing to it";
    assert_eq!(r.stderr.matches(warning).count(), 1, "{}", r.stderr);
    // Matching names: no warning.
    api.put_service("default", "web");
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert!(!r.stderr.contains("matches no port"), "{}", r.stderr);
}

/// `once` writes from this host alone: with consensus configured it says so (and writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_says_that_consensus_is_for_run() {
    let (api, e, _target, cfg) = setup("application/json").await;
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replacen(
        "token_file: ./sa/token",
        "token_file: ./sa/token\nleader_election: {enabled: true}\nconsensus: {enabled: true}",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let r = e.run_async(&["once", "-f", &cfg]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.stderr
            .matches("consensus.enabled applies to `epcheck run`")
            .count(),
        1,
        "{}",
        r.stderr
    );
    assert_eq!(ready_ips(&api), vec!["127.0.0.1"]);
    let r = e.run_async(&["once", "-f", &cfg, "--dry-run"]).await;
    assert!(!r.stderr.contains("consensus.enabled"), "{}", r.stderr);
}
