//! Secrets never leave the config: placeholders in a Secret, references in the Deployment.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{SEED, generate, load, load_with, of_kind, one};
use crate::config::Config;
use crate::manifests::{ManifestOptions, PLACEHOLDER, SECRET, manifests, notes, to_yaml_stream};

const SECRET_TEXT: &str = "Sup3r-s3cret-v4lue";
const HOOK_SECRET: &str = "SEChook-0000-secret";

pub(super) fn secret_config() -> String {
    SEED.replace("password: 123", &format!("password: {SECRET_TEXT}"))
        + &format!(
            "notify:\n  webhooks:\n    - url: https://hooks.example.com/x\n      format: dingtalk\n      secret: {HOOK_SECRET}\n"
        )
}

fn assert_no_secret(config: &Config, text: &str, secrets: &[&str]) {
    let opts = ManifestOptions::for_config(config, text);
    let docs = manifests(config, &opts);
    let out = format!("{}{:?}", to_yaml_stream(&docs), notes(config, &opts));
    for s in secrets {
        assert!(!out.contains(s), "{s} leaked into the output");
    }
}

#[test]
fn secrets_never_appear_in_the_output() {
    let text = secret_config();
    let config = load(&text);
    assert_no_secret(&config, &text, &[SECRET_TEXT, HOOK_SECRET]);

    let docs = generate(&config, &text);
    let secret = one(&docs, "Secret");
    assert_eq!(secret["stringData"]["redis-password"], PLACEHOLDER);
    assert_eq!(secret["stringData"]["webhook-0-secret"], PLACEHOLDER);
    let env = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    let by_name: BTreeMap<&str, &Value> = env
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let redis = &by_name["EPCHECK_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"];
    assert_eq!(redis["name"], SECRET);
    assert_eq!(redis["key"], "redis-password");
    assert!(redis.get("optional").is_none());
    assert!(by_name.contains_key("EPCHECK_WEBHOOK_0_SECRET"));

    // The ConfigMap's config loads without the secrets and keeps the rest.
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let reloaded = load(stored);
    let redis = reloaded.redis.as_ref().unwrap();
    assert_eq!(redis.address, "172.16.0.61:6379");
    assert!(redis.password.is_none());
    assert!(reloaded.notify.webhooks[0].secret.is_none());
    assert_eq!(reloaded.services.len(), 3);
    assert!(reloaded.token_file.is_empty());
    assert_eq!(reloaded.metrics.listen.unwrap().to_string(), "0.0.0.0:9087");
    // Edited in place: the operator's comments are still there.
    assert!(
        stored.contains("# service key -> the Endpoints object"),
        "{stored}"
    );
}

#[test]
fn secrets_in_comments_or_flow_style_force_a_rewrite() {
    let text = SEED.replace(
        "redis:\n  ipport: 172.16.0.61:6379\n  password: 123\n",
        &format!("# old password: {SECRET_TEXT}\nredis: {{ipport: \"172.16.0.61:6379\", password: {SECRET_TEXT}}}\n"),
    );
    assert_ne!(text, SEED);
    let config = load(&text);
    assert_no_secret(&config, &text, &[SECRET_TEXT]);
    let docs = generate(&config, &text);
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(stored.contains("comments were dropped"), "{stored}");
    assert_eq!(load(stored).redis.unwrap().address, "172.16.0.61:6379");
}

#[test]
fn a_password_from_the_environment_gets_a_placeholder_too() {
    let text = SEED.replace("  password: 123\n", "");
    let env = HashMap::from([(
        "EPCHECK_REDIS_PASSWORD".to_string(),
        SECRET_TEXT.to_string(),
    )]);
    let config = load_with(&text, &env);
    assert_no_secret(&config, &text, &[SECRET_TEXT]);
    assert_eq!(
        one(&generate(&config, &text), "Secret")["stringData"]["redis-password"],
        PLACEHOLDER
    );

    // Redis without any password: an optional reference, no Secret.
    let config = load(&text);
    let docs = generate(&config, &text);
    assert!(of_kind(&docs, "Secret").is_empty());
    let env = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env[2]["valueFrom"]["secretKeyRef"]["optional"], true);
}

/// Issue 18: a webhook URL with `user:password@` or `?access_token=` was copied into the
/// ConfigMap. It goes to the Secret (`EPCHECK_WEBHOOK_<n>_URL`); a plain URL stays.
#[test]
fn webhook_urls_with_credentials_go_to_the_secret() {
    let token = "0123tok-access-abcdef";
    let password = "hookpw-9f8e7d";
    let text = format!(
        "{SEED}notify:\n  webhooks:\n\
         \x20   - url: https://oapi.dingtalk.com/robot/send?access_token={token}\n\
         \x20     format: dingtalk\n\
         \x20   - url: https://alerts:{password}@hooks.example.com/epcheck\n\
         \x20   - url: https://hooks.example.com/plain\n"
    );
    let config = load(&text);
    assert_no_secret(&config, &text, &[token, password]);
    let docs = generate(&config, &text);
    let secret = one(&docs, "Secret");
    assert_eq!(secret["stringData"]["webhook-0-url"], PLACEHOLDER);
    assert_eq!(secret["stringData"]["webhook-1-url"], PLACEHOLDER);
    assert!(secret["stringData"].get("webhook-2-url").is_none());
    let env = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> = env
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(names.contains(&"EPCHECK_WEBHOOK_0_URL"), "{names:?}");
    assert!(names.contains(&"EPCHECK_WEBHOOK_1_URL"), "{names:?}");
    assert!(!names.contains(&"EPCHECK_WEBHOOK_2_URL"), "{names:?}");

    // In the pod, the URLs come back from the Secret through the environment.
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    assert!(
        stored.contains("https://hooks.example.com/plain"),
        "{stored}"
    );
    let env = HashMap::from([
        (
            "EPCHECK_WEBHOOK_0_URL".to_string(),
            format!("https://oapi.dingtalk.com/robot/send?access_token={token}"),
        ),
        (
            "EPCHECK_WEBHOOK_1_URL".to_string(),
            format!("https://alerts:{password}@hooks.example.com/epcheck"),
        ),
    ]);
    let reloaded = load_with(stored, &env);
    let urls: Vec<&str> = reloaded
        .notify
        .webhooks
        .iter()
        .map(|w| w.url.as_str())
        .collect();
    let original: Vec<&str> = config
        .notify
        .webhooks
        .iter()
        .map(|w| w.url.as_str())
        .collect();
    assert_eq!(urls, original);
}

/// The etcd store: its password goes the Redis password's way, its TLS files are mounted from
/// a Secret the operator makes, at the paths the config names.
#[cfg(feature = "etcd")]
#[test]
fn the_etcd_password_and_tls_files_come_from_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // Loading checks that each file is readable PEM; nothing here connects.
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (ca, cert, key) = (
        dir.path().join("ca.crt"),
        dir.path().join("client.crt"),
        dir.path().join("client.key"),
    );
    for file in [&ca, &cert, &key] {
        std::fs::write(file, pem).unwrap();
    }
    let redis_section = "redis:\n  ipport: 172.16.0.61:6379\n  password: 123\n";
    assert!(SEED.contains(redis_section));
    let text = SEED.replace(
        redis_section,
        &format!(
            "etcd:\n  endpoints: [\"https://198.51.100.5:2379\"]\n  username: epcheck\n  \
             password: {SECRET_TEXT}\n  ca_file: {}\n  cert_file: {}\n  key_file: {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let config = load(&text);
    assert_no_secret(&config, &text, &[SECRET_TEXT]);
    let docs = generate(&config, &text);
    assert_eq!(
        one(&docs, "Secret")["stringData"]["etcd-password"],
        PLACEHOLDER
    );
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let password = env
        .iter()
        .find(|e| e["name"] == "EPCHECK_ETCD_PASSWORD")
        .unwrap();
    assert_eq!(
        password["valueFrom"]["secretKeyRef"]["key"],
        "etcd-password"
    );
    let mounts: Vec<(&str, &str)> = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "etcd-tls")
        .map(|m| {
            (
                m["subPath"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let at = |p: &std::path::Path| p.display().to_string();
    assert_eq!(
        mounts,
        [
            ("ca.crt", at(&ca).as_str()),
            ("tls.crt", at(&cert).as_str()),
            ("tls.key", at(&key).as_str())
        ]
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "etcd-tls")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "epcheck-etcd-tls");
    let stored = one(&docs, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let reloaded = load_with(
        stored,
        &HashMap::from([("EPCHECK_ETCD_PASSWORD".to_string(), "x".to_string())]),
    );
    let etcd = reloaded.etcd.unwrap();
    assert_eq!(etcd.endpoints, ["https://198.51.100.5:2379"]);
    assert_eq!(etcd.ca_file.as_deref(), Some(ca.as_path()));
    let opts = ManifestOptions::for_config(&config, &text);
    let said = notes(&config, &opts).join("\n");
    assert!(
        said.contains("create secret generic epcheck-etcd-tls --from-file=ca.crt="),
        "{said}"
    );

    // A relative path cannot be mounted where the pod would look: a note says so.
    let relative = text.replace(&format!("ca_file: {}", ca.display()), "ca_file: ca.crt");
    let config = crate::config::check(&relative, &dir.path().join("c.yaml"), &HashMap::new())
        .unwrap()
        .config;
    let opts = ManifestOptions::for_config(&config, &relative);
    let said = notes(&config, &opts).join("\n");
    assert!(said.contains("etcd.ca_file is relative"), "{said}");
}
