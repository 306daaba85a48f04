#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rbac;
mod secrets;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;
use crate::config::{Config, Mode, check};
use secrets::secret_config;

pub(super) const SEED: &str = fixtures::configs::SEED_CONFIG;

pub(super) fn load_with(text: &str, env: &HashMap<String, String>) -> Config {
    match check(text, Path::new("config.yaml"), env) {
        Ok(l) => l.config,
        Err(e) => panic!("config does not load: {e:#?}"),
    }
}

pub(super) fn load(text: &str) -> Config {
    load_with(text, &HashMap::new())
}

pub(super) fn generate(config: &Config, text: &str) -> Vec<Value> {
    manifests(config, &ManifestOptions::for_config(config, text))
}

pub(super) fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

pub(super) fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

pub(super) fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The seed with its services spread over two namespaces (`default`, `cache`), leader election
/// on a Lease in `coord`, and EndpointSlices.
pub(super) fn wide_config() -> Config {
    let mut config = load(SEED);
    for svc in &mut config.services {
        if svc.key != "redis" {
            svc.namespace = "cache".to_string();
        }
    }
    config.leader_election.enabled = true;
    config.leader_election.namespace = Some("coord".to_string());
    config.mode = Mode::EndpointSlice;
    config
}

#[test]
fn the_deployment_is_locked_down_and_probed() {
    let config = load(SEED);
    let docs = generate(&config, SEED);
    let deploy = one(&docs, "Deployment");
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(spec["serviceAccountName"], NAME);
    assert_eq!(spec["automountServiceAccountToken"], true);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["resources"]["requests"]["cpu"], "50m");
    assert_eq!(c["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(c["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9087);
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "-f", "/etc/epcheck/config.yaml"])
    );
    assert_eq!(c["image"], default_image());
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/epcheck");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(c["env"][1]["name"], "POD_NAMESPACE");
    assert_eq!(spec["volumes"][0]["configMap"]["name"], CONFIG_MAP);
    let svc = one(&docs, "Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9087);
    assert_eq!(
        svc["spec"]["selector"],
        deploy["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn the_metrics_port_comes_from_the_config() {
    let text = format!("{SEED}metrics:\n  listen: \"127.0.0.1:9464\"\n");
    let config = load(&text);
    let docs = generate(&config, &text);
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], 9464);
    assert_eq!(one(&docs, "Service")["spec"]["ports"][0]["port"], 9464);
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(
        load(stored).metrics.listen.unwrap().to_string(),
        "0.0.0.0:9464"
    );
}

#[test]
fn per_target_off_survives_the_listen_rewrite() {
    let text = format!("{SEED}metrics:\n  listen: \"127.0.0.1:9464\"\n  per_target: false\n");
    let config = load(&text);
    let docs = generate(&config, &text);
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let reloaded = load(stored);
    assert_eq!(reloaded.metrics.listen.unwrap().to_string(), "0.0.0.0:9464");
    assert!(!reloaded.metrics.per_target, "{stored}");
}

#[test]
fn metrics_are_turned_on_for_the_probes() {
    let text = format!("{SEED}metrics: {{listen: \"off\"}}\n");
    let config = load(&text);
    assert!(config.metrics.listen.is_none());
    let docs = generate(&config, &text);
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(
        load(stored).metrics.listen.unwrap().to_string(),
        "0.0.0.0:9087"
    );
    let c = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["containerPort"], 9087);
    let opts = ManifestOptions::for_config(&config, text);
    assert!(
        notes(&config, &opts)
            .iter()
            .any(|n| n.contains("it was off"))
    );
}

#[test]
fn replicas_need_leader_election() {
    let mut config = load(SEED);
    let opts = ManifestOptions {
        replicas: 3,
        config_text: SEED.to_string(),
        ..ManifestOptions::default()
    };
    assert_eq!(
        one(&manifests(&config, &opts), "Deployment")["spec"]["replicas"],
        1
    );
    assert!(
        notes(&config, &opts)
            .iter()
            .any(|n| n.contains("leader_election"))
    );
    config.leader_election.enabled = true;
    let docs = manifests(&config, &opts);
    let deploy = one(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(deploy["spec"]["template"]["spec"]["affinity"].is_object());
}

#[test]
fn consensus_defaults_to_three_replicas_and_fewer_are_noted() {
    let mut config = load(SEED);
    config.leader_election.enabled = true;
    assert_eq!(ManifestOptions::for_config(&config, SEED).replicas, 2);
    config.consensus.enabled = true;
    let opts = ManifestOptions::for_config(&config, SEED);
    assert_eq!(opts.replicas, 3);
    assert_eq!(
        one(&manifests(&config, &opts), "Deployment")["spec"]["replicas"],
        3
    );
    assert!(
        !notes(&config, &opts)
            .iter()
            .any(|n| n.contains("consensus"))
    );
    let two = ManifestOptions {
        replicas: 2,
        ..opts
    };
    assert!(
        notes(&config, &two)
            .iter()
            .any(|n| n.contains("consensus is enabled with 2 replicas")),
        "{:?}",
        notes(&config, &two)
    );
}

#[test]
fn optional_objects_when_asked_for() {
    let config = load(SEED);
    let base = ManifestOptions::for_config(&config, SEED);
    let docs = manifests(&config, &base);
    for kind in ["ServiceMonitor", "PrometheusRule", "KuberhealthyCheck"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} only when asked for"
        );
    }
    let rules = "groups:\n  - name: epcheck\n    rules:\n      - alert: EpcheckAbsent\n        expr: absent(up{job=\"epcheck\"})\n";
    let opts = ManifestOptions {
        service_monitor: true,
        prometheus_rule: Some(rules.to_string()),
        kuberhealthy: true,
        namespace: "ops".to_string(),
        ..base.clone()
    };
    let docs = manifests(&config, &opts);
    assert_eq!(
        one(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"],
        "metrics"
    );
    let rule = one(&docs, "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][0]["alert"],
        "EpcheckAbsent"
    );
    let kh = one(&docs, "KuberhealthyCheck");
    assert_eq!(kh["apiVersion"], "comcast.github.io/v1");
    assert_eq!(kh["metadata"]["namespace"], "ops");
    let c = &kh["spec"]["podSpec"]["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!(["khcheck", "-f", "/etc/epcheck/config.yaml"])
    );
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    let shipped = ManifestOptions {
        prometheus_rule: Some(ALERT_RULES.to_string()),
        ..base.clone()
    };
    let docs = manifests(&config, &shipped);
    assert!(one(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"].is_array());
    assert!(
        !notes(&config, &shipped)
            .iter()
            .any(|n| n.contains("PrometheusRule"))
    );

    let bad = ManifestOptions {
        prometheus_rule: Some("just: text\n".to_string()),
        ..base
    };
    assert!(of_kind(&manifests(&config, &bad), "PrometheusRule").is_empty());
    assert!(
        notes(&config, &bad)
            .iter()
            .any(|n| n.contains("PrometheusRule"))
    );
}

#[test]
fn the_yaml_stream_round_trips() {
    let config = wide_config();
    let docs = generate(&config, &secret_config());
    let yaml = to_yaml_stream(&docs);
    let parsed: Vec<Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(parsed, docs);
    assert!(
        yaml.starts_with("---\napiVersion: v1\nkind: Namespace\n"),
        "{yaml}"
    );
    assert!(yaml.contains("CVE-2021-25740"));
}

/// The files under `deploy/` are this generator's output for `deploy/config.yaml`.
/// `EPCHECK_BLESS=1 cargo test -p epcheck-cli --lib manifests` rewrites them.
#[test]
fn deploy_files_match_the_generator() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let text = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
    let config = load(&text);
    let opts = ManifestOptions {
        service_monitor: true,
        ..ManifestOptions::for_config(&config, text)
    };
    assert!(
        notes(&config, &opts).is_empty(),
        "{:?}",
        notes(&config, &opts)
    );
    let header = "# Generated by `epcheck manifests -f deploy/config.yaml --service-monitor`.\n\
                  # Do not edit: change config.yaml, then run\n\
                  #   EPCHECK_BLESS=1 cargo test -p epcheck-cli --lib manifests\n";
    let files = deploy_files(&manifests(&config, &opts), header);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "namespace.yaml",
            "rbac.yaml",
            "configmap.yaml",
            "deployment.yaml",
            "service.yaml",
            "servicemonitor.yaml",
            "kustomization.yaml"
        ]
    );
    let bless = std::env::var("EPCHECK_BLESS").is_ok_and(|v| v == "1");
    for f in &files {
        let path = dir.join(&f.name);
        if bless {
            std::fs::write(&path, &f.text).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == f.text,
            "deploy/{} differs from the generator's output; run \
             EPCHECK_BLESS=1 cargo test -p epcheck-cli --lib manifests",
            f.name
        );
    }
}
