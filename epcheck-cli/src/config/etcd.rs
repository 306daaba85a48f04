//! The `etcd` section (SPEC §3.3, §6) and which store and lock the config picks.

use std::path::Path;

use serde_yaml::Value;

use super::reader::{Reader, get, join};
use super::validate::{read_secret, resolve};
use super::{Environment, EtcdConfig, LeaderBackend, LeaderElection, RedisConfig};

pub(super) const ETCD_KEYS: &[&str] = &[
    "endpoints",
    "username",
    "password",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "key_prefix",
];

/// The default `etcd.key_prefix`.
const DEFAULT_PREFIX: &str = "epcheck/";

/// Reads `etcd`; `None` when absent, null or without endpoints.
pub(super) fn read_etcd(
    r: &mut Reader,
    value: &Value,
    base_dir: &Path,
    env: &dyn Environment,
) -> Option<EtcdConfig> {
    let p = "etcd";
    let map = r.mapping(value, p, ETCD_KEYS);
    let endpoints: Vec<String> = match get(map, "endpoints") {
        // One endpoint may be written as a plain value.
        Some(Value::String(one)) => vec![one.trim().to_owned()],
        Some(list) => {
            let items = r.sequence(list, &join(p, "endpoints")).unwrap_or_default();
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| r.text(Some(v), &format!("{p}.endpoints[{i}]")))
                .map(|s| s.trim().to_owned())
                .collect()
        }
        None => Vec::new(),
    };
    let password = read_secret(
        r,
        map,
        p,
        "password",
        base_dir,
        env.var("EPCHECK_ETCD_PASSWORD"),
    );
    let username = r
        .text(get(map, "username"), &join(p, "username"))
        .filter(|s| !s.is_empty());
    let mut file = |key: &str| {
        r.text(get(map, key), &join(p, key))
            .filter(|s| !s.is_empty())
            .map(|s| resolve(base_dir, &s))
    };
    let (ca_file, cert_file, key_file) = (file("ca_file"), file("cert_file"), file("key_file"));
    let key_prefix = r
        .text(get(map, "key_prefix"), &join(p, "key_prefix"))
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    if map.is_some() && endpoints.is_empty() {
        r.error(
            &join(p, "endpoints"),
            "missing; list the etcd members' client URLs, e.g. [\"https://10.0.0.5:2379\"], or \
             remove the etcd section for the in-memory store",
        );
        return None;
    }
    if endpoints.is_empty() {
        return None;
    }
    let config = EtcdConfig {
        endpoints,
        username,
        password,
        ca_file,
        cert_file,
        key_file,
        key_prefix,
    };
    check_options(r, &config);
    Some(config)
}

/// The checks the store makes when it connects, made now so `validate` reports them.
#[cfg(feature = "etcd")]
fn check_options(r: &mut Reader, config: &EtcdConfig) {
    if let Err(e) = crate::store::etcd_options(config).check() {
        let (key, reason) = match e {
            state_store::Error::EtcdOption { option, reason } => (format!("etcd.{option}"), reason),
            other => ("etcd".to_owned(), other.to_string()),
        };
        r.error(&key, reason);
    }
}

/// Without the `etcd` feature there is no etcd store to check against: say how to get one.
#[cfg(not(feature = "etcd"))]
fn check_options(r: &mut Reader, _config: &EtcdConfig) {
    r.error(
        "etcd",
        "this epcheck was built without the etcd store: build it with \
         `cargo build --release -p epcheck-cli --features etcd` (the container image has it), \
         or use redis or the in-memory store",
    );
}

/// One store, and a leader lock on the store that is configured.
pub(super) fn check_choice(
    r: &mut Reader,
    redis: Option<&RedisConfig>,
    etcd: Option<&EtcdConfig>,
    leader: &LeaderElection,
) {
    if redis.is_some() && etcd.is_some() {
        r.error(
            "etcd",
            "a redis and an etcd section together: epcheck keeps its state in one store; remove \
             one of them",
        );
    }
    if !leader.enabled {
        return;
    }
    match leader.backend {
        LeaderBackend::Etcd if etcd.is_none() => r.error(
            "leader_election.backend",
            "etcd, but no etcd is configured: add an etcd section with its endpoints, or use \
             backend: lease",
        ),
        LeaderBackend::Redis if redis.is_none() => r.error(
            "leader_election.backend",
            "redis, but no Redis is configured: set redis.ipport, or use backend: lease",
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::path::Path;

    #[cfg(feature = "etcd")]
    use secrecy::ExposeSecret;

    #[cfg(feature = "etcd")]
    use crate::config::LeaderBackend;
    use crate::config::{ConfigError, Diagnostic, Loaded, check};

    const BASE: &str = "interval: 1000\npingtimeout: 500\nurl: http://127.0.0.1:1\ntoken_file: t\n\
        service_info: {web: {namespace: default, name: web}}\n\
        service_healthcheck_list: {web: {port: 80, iplist: [{name: n0, ip: 198.51.100.1}]}}\n\
        endpoint_template: {kind: Endpoints, apiVersion: v1, subsets: [{ports: [{port: 80}]}]}\n";

    fn load_with(extra: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        check(
            &format!("{BASE}{extra}"),
            Path::new("/nonexistent-epcheck-test/c.yaml"),
            &env,
        )
    }

    fn errors(extra: &str) -> Vec<Diagnostic> {
        match load_with(extra, &[]) {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            Err(e) => panic!("expected Invalid, got {e}"),
            Ok(_) => panic!("accepted:\n{extra}"),
        }
    }

    /// The one error's key and message.
    fn error(extra: &str) -> (String, String) {
        let errors = errors(extra);
        assert_eq!(errors.len(), 1, "{errors:?}");
        (errors[0].key.clone(), errors[0].message.clone())
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn the_etcd_section_loads_with_its_defaults() {
        let c = load_with(
            "etcd:\n  endpoints: [\"https://198.51.100.5:2379\", 198.51.100.6:2379]\n  username: epcheck\n\
             leader_election: {enabled: true, backend: etcd}\n",
            &[("EPCHECK_ETCD_PASSWORD", "from-env")],
        )
        .unwrap()
        .config;
        let etcd = c.etcd.unwrap();
        assert_eq!(
            etcd.endpoints,
            ["https://198.51.100.5:2379", "198.51.100.6:2379"]
        );
        assert_eq!(etcd.key_prefix, "epcheck/");
        assert_eq!(etcd.password.unwrap().expose_secret(), "from-env");
        assert!(c.redis.is_none());
        assert_eq!(c.leader_election.backend, LeaderBackend::Etcd);

        // One endpoint may be a plain value; no etcd section is the in-memory store.
        let c = load_with("etcd: {endpoints: \"http://127.0.0.1:2379\"}\n", &[])
            .unwrap()
            .config;
        assert_eq!(c.etcd.unwrap().endpoints, ["http://127.0.0.1:2379"]);
        assert!(load_with("", &[]).unwrap().config.etcd.is_none());
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn bad_etcd_settings_name_the_key_and_what_to_do() {
        let (key, message) = error("etcd: {endpoints: [\"unix:///run/etcd.sock\"]}\n");
        assert_eq!(key, "etcd.endpoints");
        assert!(message.contains("https://"), "{message}");
        let (key, message) = error("etcd: {key_prefix: x/}\n");
        assert_eq!(key, "etcd.endpoints");
        assert!(message.contains("missing"), "{message}");
        let (key, message) = error(
            "etcd: {endpoints: [\"https://127.0.0.1:2379\"], cert_file: /nonexistent/c.pem}\n",
        );
        assert_eq!(key, "etcd.key_file", "{message}");
        let (key, message) = error(
            "etcd: {endpoints: [\"https://127.0.0.1:2379\"], ca_file: /nonexistent/ca.pem}\n",
        );
        assert_eq!(key, "etcd.ca_file");
        assert!(
            message.contains("cannot read /nonexistent/ca.pem"),
            "{message}"
        );
        let (key, message) =
            error("etcd: {endpoints: [\"http://127.0.0.1:2379\"], username: epcheck}\n");
        assert_eq!(key, "etcd.password");
        assert!(message.contains("EPCHECK_ETCD_PASSWORD"), "{message}");
        let errors = errors("etcd: {endpoint: [\"http://127.0.0.1:2379\"]}\n");
        assert!(
            errors.iter().any(|e| e.message.contains("endpoints")),
            "an unknown key suggests the known one: {errors:?}"
        );
    }

    #[test]
    fn one_store_and_a_lock_where_the_store_is() {
        let both = errors(
            "redis: {ipport: 127.0.0.1:6379}\netcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n",
        );
        assert!(
            both.iter()
                .any(|e| e.key == "etcd" && e.message.contains("one store")),
            "{both:?}"
        );
        let (key, message) = error("leader_election: {enabled: true, backend: etcd}\n");
        assert_eq!(key, "leader_election.backend");
        assert!(message.contains("no etcd is configured"), "{message}");
        let (key, message) = error("leader_election: {enabled: true, backend: redis}\n");
        assert_eq!(key, "leader_election.backend");
        assert!(message.contains("no Redis"), "{message}");
        // Disabled election: the backend is not used, so not checked.
        assert!(load_with("leader_election: {enabled: false, backend: etcd}\n", &[]).is_ok());
    }

    #[cfg(not(feature = "etcd"))]
    #[test]
    fn a_build_without_etcd_says_how_to_get_it() {
        let (key, message) = error("etcd: {endpoints: [\"http://127.0.0.1:2379\"]}\n");
        assert_eq!(key, "etcd");
        assert!(message.contains("--features etcd"), "{message}");
    }
}
