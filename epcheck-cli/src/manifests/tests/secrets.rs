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
