//! The config as it goes into the ConfigMap: the operator's file, with what cannot work (or
//! must not be stored) in a pod taken out.
//!
//! - Secrets (`redis.password`, `redis.password_file`, the same two keys of `etcd`, webhook
//!   `secret`/`secret_file`, and a
//!   webhook `url` that carries a credential: `user:password@` or a query such as
//!   `?access_token=`) are removed; the pod reads them from a Secret through `EPCHECK_*`
//!   variables (`EPCHECK_WEBHOOK_<n>_URL` for a URL). A ConfigMap is
//!   readable by far more people than a Secret, and `manifests` output ends up in Git.
//! - `token_file` and `ca_file` are removed: in the pod epcheck uses the ServiceAccount's token
//!   and CA, which is what the generated RBAC is bound to.
//! - `metrics.listen` is set to all interfaces (keeping the port; 9087 when it was `off`),
//!   since the kubelet's probes and Prometheus come in on the pod's IP.
//!
//! The file is edited line by line so its comments survive. The result is parsed again and
//! compared with the same edits made on the parsed tree; when they differ (flow style, anchors,
//! a key this cannot edit in place), or a secret's value is still somewhere in the text (a
//! comment), the tree is written out instead and the comments are lost.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use secrecy::ExposeSecret;
use serde_yaml::{Mapping, Value};

use super::{DEFAULT_METRICS_PORT, SECRET};
use crate::config::{Config, LineIndex, webhook_url_var};

/// Whether a webhook URL carries a credential: user info (`user:password@`) or a query (a
/// DingTalk robot's `?access_token=`, a Slack-style token). Such a URL goes to the Secret.
pub(super) fn carries_credential(url: &str) -> bool {
    k8s_endpoints::client::redact_url(url) != url
}

/// The adapted config text and what was changed, one sentence per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Adapted {
    /// The text for the ConfigMap.
    pub text: String,
    /// What was changed and why.
    pub changes: Vec<String>,
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// A key to remove, with the reason.
struct Removal {
    path: Vec<Seg>,
    why: String,
}

/// Adapts `text`, the file `config` was loaded from, for the ConfigMap.
pub(super) fn adapt(text: &str, config: &Config) -> Adapted {
    let Ok(original) = serde_yaml::from_str::<Value>(text) else {
        // Not the text the config was loaded from: store nothing rather than risk a secret.
        return Adapted {
            text: String::new(),
            changes: vec![
                "the config text did not parse as YAML: the ConfigMap is empty; \
                           pass the file the config was loaded from"
                    .to_string(),
            ],
        };
    };
    let removals = removals(&original, config);
    let listen = wanted_listen(config);
    let mut expected = original.clone();
    let mut changes = Vec::new();
    for r in &removals {
        remove_value(&mut expected, &r.path);
        changes.push(r.why.clone());
    }
    if let Some(addr) = listen {
        if let Value::Mapping(top) = &mut expected {
            let mut metrics = Mapping::new();
            metrics.insert("listen".into(), addr.to_string().into());
            if !config.metrics.per_target {
                metrics.insert("per_target".into(), false.into());
            }
            top.shift_remove("metrics");
            top.insert("metrics".into(), Value::Mapping(metrics));
        }
        changes.push(if config.metrics.listen.is_none() {
            format!(
                "metrics.listen set to {addr} (it was off): the Deployment's liveness and \
                 readiness probes need /healthz and /readyz"
            )
        } else {
            format!(
                "metrics.listen set to {addr}: the kubelet's probes and Prometheus reach the \
                 pod on its own IP"
            )
        });
    }
    if changes.is_empty() {
        return Adapted {
            text: text.to_string(),
            changes,
        };
    }
    let secrets = secret_values(config);
    let edited = edit_text(text, &removals, listen, config.metrics.per_target)
        .map(|t| with_header(&t, &changes));
    let kept = edited.filter(|t| {
        serde_yaml::from_str::<Value>(t).is_ok_and(|v| v == expected)
            && !secrets.iter().any(|s| t.contains(s.as_str()))
    });
    let text = match kept {
        Some(t) => t,
        None => {
            changes.push(
                "the file could not be edited in place, so it was rewritten and its comments \
                 were dropped"
                    .to_string(),
            );
            let body = serde_yaml::to_string(&expected).unwrap_or_default();
            with_header(&body, &changes)
        }
    };
    Adapted { text, changes }
}

/// The keys to remove from `root`, which `config` was loaded from.
fn removals(root: &Value, config: &Config) -> Vec<Removal> {
    let mut out = Vec::new();
    let secret = |path: Vec<Seg>, env: &str| Removal {
        why: format!(
            "{} removed from the ConfigMap: the pod reads it from Secret {SECRET} through {env}",
            display(&path)
        ),
        path,
    };
    for (store, env) in [
        ("redis", "EPCHECK_REDIS_PASSWORD"),
        ("etcd", "EPCHECK_ETCD_PASSWORD"),
    ] {
        for key in ["password", "password_file"] {
            let path = vec![Seg::Key(store), Seg::Key(key)];
            if is_set(root, &path) {
                out.push(secret(path, env));
            }
        }
    }
    let hooks = lookup(root, &[Seg::Key("notify"), Seg::Key("webhooks")])
        .and_then(Value::as_sequence)
        .map_or(0, Vec::len);
    for i in 0..hooks {
        for key in ["secret", "secret_file"] {
            let path = vec![
                Seg::Key("notify"),
                Seg::Key("webhooks"),
                Seg::Index(i),
                Seg::Key(key),
            ];
            if is_set(root, &path) {
                out.push(secret(path, &format!("EPCHECK_WEBHOOK_{i}_SECRET")));
            }
        }
        let path = vec![
            Seg::Key("notify"),
            Seg::Key("webhooks"),
            Seg::Index(i),
            Seg::Key("url"),
        ];
        let credential = config
            .notify
            .webhooks
            .get(i)
            .is_some_and(|w| carries_credential(&w.url));
        if credential && is_set(root, &path) {
            out.push(secret(path, &webhook_url_var(i)));
        }
    }
    if !config.token_file.is_empty() && is_set(root, &[Seg::Key("token_file")]) {
        out.push(Removal {
            path: vec![Seg::Key("token_file")],
            why: "token_file removed: in the pod epcheck reads the ServiceAccount token mounted \
                  at /var/run/secrets/kubernetes.io/serviceaccount/token"
                .to_string(),
        });
    }
    if config.ca_file.is_some() && is_set(root, &[Seg::Key("ca_file")]) {
        out.push(Removal {
            path: vec![Seg::Key("ca_file")],
            why: "ca_file removed: in the pod epcheck uses the ServiceAccount's ca.crt".to_string(),
        });
    }
    out
}

/// The listen address to write, when `metrics.listen` is off or not on all interfaces.
fn wanted_listen(config: &Config) -> Option<SocketAddr> {
    match config.metrics.listen {
        None => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            DEFAULT_METRICS_PORT,
        )),
        Some(a) if a.ip().is_unspecified() && a.port() != 0 => None,
        Some(a) => {
            let ip = match a.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            let port = if a.port() == 0 {
                DEFAULT_METRICS_PORT
            } else {
                a.port()
            };
            Some(SocketAddr::new(ip, port))
        }
    }
}

/// The secret values in `config`, so the adapted text can be checked for them.
fn secret_values(config: &Config) -> Vec<String> {
    let redis = config
        .redis
        .as_ref()
        .and_then(|r| r.password.as_ref())
        .map(|s| s.expose_secret().to_string());
    let etcd = config
        .etcd
        .as_ref()
        .and_then(|e| e.password.as_ref())
        .map(|s| s.expose_secret().to_string());
    let hooks = config
        .notify
        .webhooks
        .iter()
        .filter_map(|w| w.secret.as_ref())
        .map(|s| s.expose_secret().to_string());
    let urls = config
        .notify
        .webhooks
        .iter()
        .filter(|w| carries_credential(&w.url))
        .map(|w| w.url.clone());
    redis
        .into_iter()
        .chain(etcd)
        .chain(hooks)
        .chain(urls)
        .filter(|s| !s.is_empty())
        .collect()
}

fn with_header(body: &str, changes: &[String]) -> String {
    let mut out = String::from("# Adapted by `epcheck manifests` for running in the cluster:\n");
    for c in changes {
        out.push_str("#  - ");
        out.push_str(c);
        out.push('\n');
    }
    out.push_str(body);
    out
}

fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn lookup<'v>(root: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, seg| match seg {
        Seg::Key(k) => v.as_mapping()?.get(*k),
        Seg::Index(i) => v.as_sequence()?.get(*i),
    })
}

/// The key exists with a value other than null or an empty string.
fn is_set(root: &Value, path: &[Seg]) -> bool {
    match lookup(root, path) {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn remove_value(root: &mut Value, path: &[Seg]) {
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return;
    };
    let parent = parents.iter().try_fold(root, |v, seg| match seg {
        Seg::Key(k) => v.as_mapping_mut()?.get_mut(*k),
        Seg::Index(i) => v.as_sequence_mut()?.get_mut(*i),
    });
    if let Some(Value::Mapping(m)) = parent {
        m.shift_remove(*last);
    }
}

/// The edits made on the text; `None` when one of them cannot be made in place.
fn edit_text(
    text: &str,
    removals: &[Removal],
    listen: Option<SocketAddr>,
    per_target: bool,
) -> Option<String> {
    let mut text = text.to_string();
    for r in removals {
        text = remove_entry(&text, &r.path)?;
    }
    if let Some(addr) = listen {
        if let Ok(root) = serde_yaml::from_str::<Value>(&text)
            && lookup(&root, &[Seg::Key("metrics")]).is_some()
        {
            text = remove_entry(&text, &[Seg::Key("metrics")])?;
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("metrics:\n  listen: \"{addr}\"\n"));
        if !per_target {
            text.push_str("  per_target: false\n");
        }
    }
    Some(text)
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Removes the block-style entry at `path` (its key line and every line of its value).
fn remove_entry(text: &str, path: &[Seg]) -> Option<String> {
    let Some(Seg::Key(key)) = path.last() else {
        return None;
    };
    let line_no = LineIndex::build(text).line_of(&display(path))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = line_no.checked_sub(1)?;
    let line = lines.get(start)?;
    let indent = indent_of(line);
    let after = line[indent..].strip_prefix(key)?.strip_prefix(':')?;
    if !(after.trim().is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let value = after.trim();
    let block_value = value.is_empty() || value.starts_with('#');
    let mut end = start + 1;
    let mut i = start + 1;
    while let Some(l) = lines.get(i) {
        let t = l.trim();
        let ind = indent_of(l);
        if t.is_empty() {
            i += 1;
            continue;
        }
        let item = block_value && ind == indent && (t == "-" || t.starts_with("- "));
        if ind > indent || item {
            i += 1;
            end = i;
            continue;
        }
        break;
    }
    let mut out = String::with_capacity(text.len());
    for (n, l) in lines.iter().enumerate() {
        if n < start || n >= end {
            out.push_str(l);
        }
    }
    Some(out)
}
