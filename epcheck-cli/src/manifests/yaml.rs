//! Writing the objects out: one YAML stream, or the files under `deploy/`.
//!
//! serde_json's maps are sorted, so keys are re-ordered the way people write manifests
//! (`apiVersion`, `kind`, `metadata`, `name` first, the rest alphabetically) on the way to YAML.

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value as Yaml};

/// Keys written before all others, in this order.
const FIRST_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "name", "namespace"];

/// The comment written above each object of `kind`, if any.
fn comment(kind: &str) -> &'static str {
    match kind {
        "Role" => {
            "# Least privilege: get/update/create on the named Endpoints and get on the\n\
             # named Services; create is named because epcheck creates with a PUT to the\n\
             # object's own URL. Writable Endpoints can forward a Service's traffic anywhere,\n\
             # even to pods of other namespaces (CVE-2021-25740), so nothing wider: no\n\
             # list or watch on Endpoints, no wildcard, no ClusterRole. EndpointSlices\n\
             # cannot be name-restricted: in mode endpointslice epcheck writes them; in mode\n\
             # endpoints it may only list, update and delete the ones it wrote before, to\n\
             # hand the Service back to the mirroring controller cleanly.\n"
        }
        "Lease" => {
            "# Created here so that epcheck only needs get/update on it: a POST create cannot be\n\
             # restricted by name. Re-applying it is harmless (kubectl apply keeps the holder).\n"
        }
        "Secret" => {
            "# PLACEHOLDER: replace CHANGE-ME with the real value before applying, e.g.\n\
             #   kubectl -n NAMESPACE create secret generic epcheck-secrets \\\n\
             #     --from-literal=redis-password=... --dry-run=client -o yaml\n\
             # epcheck manifests never copies a secret out of the config.\n"
        }
        "ConfigMap" => "# The config, mounted at /etc/epcheck/config.yaml.\n",
        "ServiceMonitor" | "PrometheusRule" | "KuberhealthyCheck" => {
            "# A custom resource: needs its operator's CRD in the cluster.\n"
        }
        _ => "",
    }
}

/// `value` as YAML with keys in the usual order.
fn to_yaml_value(value: &Json) -> Yaml {
    match value {
        Json::Null => Yaml::Null,
        Json::Bool(b) => Yaml::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Yaml::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                Yaml::Number(u.into())
            } else {
                Yaml::Number(n.as_f64().unwrap_or_default().into())
            }
        }
        Json::String(s) => Yaml::String(s.clone()),
        Json::Array(items) => Yaml::Sequence(items.iter().map(to_yaml_value).collect()),
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                let rank = FIRST_KEYS
                    .iter()
                    .position(|f| f == k)
                    .unwrap_or(FIRST_KEYS.len());
                (rank, k.as_str())
            });
            let mut out = Mapping::new();
            for k in keys {
                if let Some(v) = map.get(k) {
                    out.insert(Yaml::String(k.clone()), to_yaml_value(v));
                }
            }
            Yaml::Mapping(out)
        }
    }
}

/// One object as a YAML document (without the `---` line), with its comment.
fn document(doc: &Json) -> String {
    let kind = doc.get("kind").and_then(Json::as_str).unwrap_or_default();
    let body = serde_yaml::to_string(&to_yaml_value(doc))
        .unwrap_or_else(|e| format!("# epcheck: this object could not be written: {e}\n"));
    format!("{}{body}", comment(kind))
}

/// The objects as one YAML stream, each document starting with `---`.
pub fn to_yaml_stream(docs: &[Json]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", document(d)))
        .collect()
}

/// One file of the `deploy/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFile {
    /// File name, e.g. `rbac.yaml`.
    pub name: String,
    /// Its contents.
    pub text: String,
}

/// The file an object of `kind` goes to.
fn file_for(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "namespace.yaml",
        "ServiceAccount" | "Role" | "RoleBinding" => "rbac.yaml",
        "Lease" => "lease.yaml",
        "Secret" => "secret.yaml",
        "ConfigMap" => "configmap.yaml",
        "Deployment" => "deployment.yaml",
        "Service" => "service.yaml",
        "ServiceMonitor" => "servicemonitor.yaml",
        "PrometheusRule" => "prometheusrule.yaml",
        "KuberhealthyCheck" => "khcheck.yaml",
        _ => "other.yaml",
    }
}

/// Custom resources: left out of `kustomization.yaml`, since applying them fails where their
/// CRD is not installed.
fn is_custom(file: &str) -> bool {
    matches!(
        file,
        "servicemonitor.yaml" | "prometheusrule.yaml" | "khcheck.yaml"
    )
}

/// The objects split into one file per kind of concern (`namespace.yaml`, `rbac.yaml`, ...)
/// plus a `kustomization.yaml` listing them, each starting with `header` (a comment; may be
/// empty). Files come in the order to apply them.
pub fn deploy_files(docs: &[Json], header: &str) -> Vec<DeployFile> {
    let mut files: Vec<DeployFile> = Vec::new();
    for doc in docs {
        let kind = doc.get("kind").and_then(Json::as_str).unwrap_or_default();
        let name = file_for(kind);
        let text = format!("---\n{}", document(doc));
        match files.iter_mut().find(|f| f.name == name) {
            Some(f) => f.text.push_str(&text),
            None => files.push(DeployFile {
                name: name.to_string(),
                text: format!("{header}{text}"),
            }),
        }
    }
    let mut kustomization = format!(
        "{header}# kubectl apply -k . applies these. Custom resources (ServiceMonitor and the\n\
         # like) are not listed: add them once their operator's CRDs are installed.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    );
    for f in files.iter().filter(|f| !is_custom(&f.name)) {
        kustomization.push_str(&format!("  - {}\n", f.name));
    }
    files.push(DeployFile {
        name: "kustomization.yaml".to_string(),
        text: kustomization,
    });
    files
}
