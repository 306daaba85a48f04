//! The optional objects: a `ServiceMonitor` (Prometheus Operator), a `PrometheusRule` with the
//! shipped alert rules and a `KuberhealthyCheck` running `epcheck khcheck`. Their kinds are
//! CRDs, so they apply only where those operators are installed.

use serde_json::{Value, json};

use super::workload::{container_security_context, pod_security_context, resources};
use super::{CONFIG_PATH, ManifestOptions, NAME, labels, selector, workload};

/// Scrapes the metrics Service every 30 s, as job `epcheck` (the job the alert rules expect;
/// without `jobLabel` it would be the Service's name).
pub(super) fn service_monitor(namespace: &str) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": { "name": NAME, "namespace": namespace, "labels": labels() },
        "spec": {
            "jobLabel": "app.kubernetes.io/name",
            "selector": { "matchLabels": selector() },
            "endpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "interval": "30s",
                "scrapeTimeout": "10s",
            }],
        },
    })
}

/// A PrometheusRule whose `spec` is `rules`, a Prometheus rules file (`groups: [...]`).
pub(super) fn prometheus_rule(namespace: &str, rules: &str) -> Result<Value, String> {
    let spec: Value = serde_yaml::from_str(rules)
        .map_err(|e| format!("the alert rules are not valid YAML: {e}"))?;
    match spec.get("groups") {
        Some(Value::Array(groups)) if !groups.is_empty() => {}
        _ => {
            return Err(
                "the alert rules have no `groups:` list; expected a Prometheus rules \
                        file such as deploy/prometheus/alerts.yaml"
                    .to_string(),
            );
        }
    }
    if let Some(other) = spec
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "groups"))
    {
        return Err(format!(
            "the alert rules have a top-level key `{other}`; a rules file has only `groups`"
        ));
    }
    Ok(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": { "name": NAME, "namespace": namespace, "labels": labels() },
        "spec": spec,
    }))
}

/// A Kuberhealthy external check: a pod that runs `epcheck khcheck` every 5 minutes with the
/// same config. It only probes, so it gets no ServiceAccount token.
pub(super) fn kuberhealthy_check(opts: &ManifestOptions) -> Value {
    let (volume, mount) = workload::config_volume();
    json!({
        "apiVersion": "comcast.github.io/v1",
        "kind": "KuberhealthyCheck",
        "metadata": { "name": NAME, "namespace": opts.namespace, "labels": labels() },
        "spec": {
            "runInterval": "5m",
            "timeout": "2m",
            "podSpec": {
                "automountServiceAccountToken": false,
                "securityContext": pod_security_context(),
                "containers": [{
                    "name": NAME,
                    "image": opts.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["khcheck", "-f", CONFIG_PATH],
                    "resources": resources(),
                    "securityContext": container_security_context(),
                    "volumeMounts": [mount],
                }],
                "volumes": [volume],
            },
        },
    })
}
