//! `epcheck manifests`: the Kubernetes objects that deploy epcheck for a config (SPEC §10).

use serde_json::Value;

use crate::util::{Epcheck, Run, seed, seed_path};

fn docs(run: &Run) -> Vec<Value> {
    assert_eq!(run.code, 0, "{}", run.all());
    serde_yaml::Deserializer::from_str(&run.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {:?}", kinds(docs));
    found[0]
}

fn stored_config(docs: &[Value]) -> String {
    one(docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_seed_gives_a_stream_of_kubernetes_objects() {
    let e = Epcheck::new();
    let run = e.run(&["manifests", "-f", seed_path().to_str().unwrap()]);
    let docs = docs(&run);
    assert!(run.stdout.starts_with("---\n"), "{}", run.stdout);
    assert_eq!(
        kinds(&docs),
        [
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Secret",
            "ConfigMap",
            "Deployment",
            "Service"
        ]
    );
    // All three services live in `default`: one Role there, for exactly their Endpoints.
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "default");
    assert_eq!(
        role["rules"][0]["resourceNames"],
        serde_json::json!(["ceph", "emqx", "redis"])
    );
    assert!(run.stdout.contains("CVE-2021-25740"));
    // The seed's inline password and token_file are not stored; stderr says why.
    let stored = stored_config(&docs);
    assert!(!stored.contains("password: 123"), "{stored}");
    assert!(!stored.contains("token_file: default"), "{stored}");
    assert_eq!(
        one(&docs, "Secret")["stringData"]["redis-password"],
        "CHANGE-ME"
    );
    assert!(run.stderr.contains("token_file"), "{}", run.stderr);
}

#[test]
fn secrets_never_reach_the_output() {
    let e = Epcheck::new();
    let text = seed().replace("password: 123", "password: inline-Secret-4711");
    let path = e.write("config.yaml", &text);
    let out = e
        .cmd(&["manifests", "-f", path.to_str().unwrap()])
        .env("EPCHECK_REDIS_PASSWORD", "from-env-Secret-0815")
        .output()
        .unwrap();
    let run = Run::from(out);
    let docs = docs(&run);
    for secret in ["inline-Secret-4711", "from-env-Secret-0815"] {
        assert!(
            !run.all().contains(secret),
            "{secret} leaked:\n{}",
            run.all()
        );
    }
    let env = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    let redis = env
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "EPCHECK_REDIS_PASSWORD")
        .expect("the password comes from the Secret");
    assert_eq!(
        redis["valueFrom"]["secretKeyRef"]["name"],
        "epcheck-secrets"
    );
    // What is stored still loads.
    let stored = e.write("stored.yaml", &stored_config(&docs));
    let check = e.run(&["validate", "-f", stored.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}", check.all());
}

#[test]
fn flags_choose_the_namespace_image_and_extras() {
    let e = Epcheck::new();
    let run = e.run(&[
        "manifests",
        "-f",
        seed_path().to_str().unwrap(),
        "--namespace",
        "ops",
        "--image",
        "registry.example/epcheck:test",
        "--service-monitor",
        "--prometheus-rule",
        "--kuberhealthy",
    ]);
    let docs = docs(&run);
    for kind in ["ServiceMonitor", "PrometheusRule", "KuberhealthyCheck"] {
        assert_eq!(one(&docs, kind)["metadata"]["namespace"], "ops");
    }
    assert_eq!(one(&docs, "Namespace")["metadata"]["name"], "ops");
    assert_eq!(one(&docs, "RoleBinding")["subjects"][0]["namespace"], "ops");
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["metadata"]["namespace"], "ops");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/epcheck:test"
    );
    assert!(
        one(&docs, "PrometheusRule")["spec"]["groups"]
            .as_array()
            .is_some_and(|g| !g.is_empty())
    );
}

#[test]
fn replicas_without_leader_election_stay_one() {
    let e = Epcheck::new();
    let run = e.run(&[
        "manifests",
        "-f",
        seed_path().to_str().unwrap(),
        "--replicas",
        "3",
    ]);
    let docs = docs(&run);
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 1);
    assert!(run.stderr.contains("leader_election"), "{}", run.stderr);
}

#[test]
fn a_bad_namespace_is_a_usage_error() {
    let e = Epcheck::new();
    let run = e.run(&[
        "manifests",
        "-f",
        seed_path().to_str().unwrap(),
        "--namespace",
        "Not_A_Namespace",
    ]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
