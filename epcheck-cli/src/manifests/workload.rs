//! The ConfigMap, the Secret placeholder, the Deployment and the metrics Service.

use serde_json::{Value, json};

use super::{
    CONFIG_DIR, CONFIG_MAP, CONFIG_PATH, ManifestOptions, NAME, PLACEHOLDER, RUN_AS, SECRET,
    labels, metrics_port, selector,
};
use crate::config::Config;

/// A secret the pod reads from the [`SECRET`] Secret through an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SecretRef {
    /// Key in the Secret.
    pub key: String,
    /// The environment variable epcheck reads it from.
    pub env: String,
    /// The config had no such secret: the variable is set only if someone adds the key.
    pub optional: bool,
}

/// The secrets the config uses (or could use): the Redis or etcd password when that store is
/// configured,
/// each webhook's URL when it carries a credential and its signing secret when it has one.
pub(super) fn secrets(config: &Config) -> Vec<SecretRef> {
    let mut refs = Vec::new();
    if let Some(redis) = &config.redis {
        refs.push(SecretRef {
            key: "redis-password".to_string(),
            env: "EPCHECK_REDIS_PASSWORD".to_string(),
            optional: redis.password.is_none(),
        });
    }
    if let Some(etcd) = &config.etcd {
        refs.push(SecretRef {
            key: "etcd-password".to_string(),
            env: "EPCHECK_ETCD_PASSWORD".to_string(),
            optional: etcd.password.is_none(),
        });
    }
    for (i, hook) in config.notify.webhooks.iter().enumerate() {
        if super::config_text::carries_credential(&hook.url) {
            refs.push(SecretRef {
                key: format!("webhook-{i}-url"),
                env: crate::config::webhook_url_var(i),
                optional: false,
            });
        }
        if hook.secret.is_some() {
            refs.push(SecretRef {
                key: format!("webhook-{i}-secret"),
                env: format!("EPCHECK_WEBHOOK_{i}_SECRET"),
                optional: false,
            });
        }
    }
    refs
}

/// Whether the generated Secret has any key (and so is emitted).
pub(super) fn has_secret(refs: &[SecretRef]) -> bool {
    refs.iter().any(|r| !r.optional)
}

/// The Secret with a [`PLACEHOLDER`] for every secret the config had. The real values are never
/// copied out of the config.
pub(super) fn secret(namespace: &str, refs: &[SecretRef]) -> Option<Value> {
    if !has_secret(refs) {
        return None;
    }
    let data: serde_json::Map<String, Value> = refs
        .iter()
        .filter(|r| !r.optional)
        .map(|r| (r.key.clone(), json!(PLACEHOLDER)))
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": SECRET, "namespace": namespace, "labels": labels() },
        "type": "Opaque",
        "stringData": data,
    }))
}

/// The ConfigMap holding the (adapted) config as `config.yaml`.
pub(super) fn config_map(namespace: &str, text: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": CONFIG_MAP, "namespace": namespace, "labels": labels() },
        "data": { "config.yaml": text },
    })
}

/// SHA-256 of the config, as hex: a pod annotation, so a changed config rolls the pods.
fn config_digest(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pod's security context: the `restricted` Pod Security Standard.
pub(super) fn pod_security_context() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// The container's security context.
pub(super) fn container_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

/// Requests and limits: a few services cost a few MiB; 10,000 targets stay under 32 MiB
/// (SPEC §11), so the limits leave room.
pub(super) fn resources() -> Value {
    json!({
        "requests": { "cpu": "50m", "memory": "32Mi" },
        "limits": { "cpu": "500m", "memory": "128Mi" },
    })
}

/// The volume with the ConfigMap, and its mount.
pub(super) fn config_volume() -> (Value, Value) {
    (
        json!({ "name": "config", "configMap": { "name": CONFIG_MAP } }),
        json!({ "name": "config", "mountPath": CONFIG_DIR, "readOnly": true }),
    )
}

/// The Secret holding the etcd TLS files (`ca.crt`, `tls.crt`, `tls.key`); made by the
/// operator, never by `manifests` (see [`etcd_tls_files`]).
pub(super) const ETCD_TLS_SECRET: &str = "epcheck-etcd-tls";

/// The etcd TLS files the config names, as (Secret key, path in the pod), read from the
/// config's text as written; paths that cannot be mounted there (relative, or inside the
/// ConfigMap's directory) are returned apart, by key, and reported by [`super::notes`].
pub(super) fn etcd_tls_files(
    config: &Config,
    config_text: &str,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let (mut files, mut unmountable) = (Vec::new(), Vec::new());
    if config.etcd.is_none() {
        return (files, unmountable);
    }
    let root: serde_yaml::Value = serde_yaml::from_str(config_text).unwrap_or_default();
    for (key, option) in [
        ("ca.crt", "ca_file"),
        ("tls.crt", "cert_file"),
        ("tls.key", "key_file"),
    ] {
        let Some(path) = root
            .get("etcd")
            .and_then(|e| e.get(option))
            .and_then(serde_yaml::Value::as_str)
            .map(str::trim)
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let path = std::path::Path::new(path);
        if !path.is_absolute() || path.starts_with(CONFIG_DIR) {
            unmountable.push(format!("etcd.{option}"));
        } else {
            files.push((key, path.display().to_string()));
        }
    }
    (files, unmountable)
}

fn env(refs: &[SecretRef]) -> Vec<Value> {
    let mut env = vec![
        json!({ "name": "POD_NAME",
                "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "POD_NAMESPACE",
                "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }),
    ];
    for r in refs {
        let mut key_ref = json!({ "name": SECRET, "key": r.key });
        if r.optional
            && let Some(m) = key_ref.as_object_mut()
        {
            m.insert("optional".to_string(), json!(true));
        }
        env.push(json!({ "name": r.env, "valueFrom": { "secretKeyRef": key_ref } }));
    }
    env
}

fn http_probe(path: &str, period: u32, failures: u32) -> Value {
    json!({
        "httpGet": { "path": path, "port": "metrics" },
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    })
}

/// The Deployment running `epcheck run`.
pub(super) fn deployment(
    config: &Config,
    opts: &ManifestOptions,
    config_text: &str,
    refs: &[SecretRef],
) -> Value {
    let replicas = opts.effective_replicas(config);
    let port = metrics_port(config);
    let (volume, mount) = config_volume();
    // Without leader election every replica writes: never let a rollout run two at once.
    let strategy = if config.leader_election.enabled {
        json!({ "type": "RollingUpdate",
                "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } })
    } else {
        json!({ "type": "Recreate" })
    };
    let mut pod_spec = json!({
        "serviceAccountName": NAME,
        "automountServiceAccountToken": true,
        "securityContext": pod_security_context(),
        // epcheck drains within a second or two of SIGTERM (SPEC §5.5).
        "terminationGracePeriodSeconds": 10,
        "containers": [{
            "name": NAME,
            "image": opts.image,
            "imagePullPolicy": "IfNotPresent",
            "args": ["run", "-f", CONFIG_PATH],
            "env": env(refs),
            "ports": [{ "name": "metrics", "containerPort": port, "protocol": "TCP" }],
            "livenessProbe": http_probe("/healthz", 10, 3),
            "readinessProbe": http_probe("/readyz", 5, 2),
            "resources": resources(),
            "securityContext": container_security_context(),
            "volumeMounts": [mount],
        }],
        "volumes": [volume],
    });
    let (tls_files, _) = etcd_tls_files(config, config_text);
    if !tls_files.is_empty() {
        // Each file at the path the config names, from the operator's Secret.
        if let Some(mounts) = pod_spec.pointer_mut("/containers/0/volumeMounts")
            && let Some(mounts) = mounts.as_array_mut()
        {
            for (key, path) in &tls_files {
                mounts.push(
                    json!({ "name": "etcd-tls", "mountPath": path, "subPath": key,
                                    "readOnly": true }),
                );
            }
        }
        if let Some(volumes) = pod_spec.get_mut("volumes").and_then(Value::as_array_mut) {
            volumes.push(json!({ "name": "etcd-tls",
                                 "secret": { "secretName": ETCD_TLS_SECRET, "defaultMode": 0o440 } }));
        }
    }
    if replicas > 1
        && let Some(spec) = pod_spec.as_object_mut()
    {
        // Replicas on one node fail together; spread them when the cluster allows it.
        spec.insert(
            "affinity".to_string(),
            json!({ "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": { "matchLabels": selector() },
                },
            }] } }),
        );
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": NAME, "namespace": opts.namespace, "labels": labels() },
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": { "matchLabels": selector() },
            "template": {
                "metadata": {
                    "labels": labels(),
                    "annotations": { "epcheck.io/config-sha256": config_digest(config_text) },
                },
                "spec": pod_spec,
            },
        },
    })
}

/// The Service in front of the metrics port, for scraping.
pub(super) fn metrics_service(namespace: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "epcheck-metrics", "namespace": namespace, "labels": labels() },
        "spec": {
            "type": "ClusterIP",
            "selector": selector(),
            "ports": [{ "name": "metrics", "port": port, "targetPort": "metrics",
                        "protocol": "TCP" }],
        },
    })
}
