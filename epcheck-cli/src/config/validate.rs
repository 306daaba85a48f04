//! Turning the parsed file into checked types (SPEC §3), collecting every error and warning.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use k8s_endpoints::consensus::ConsensusSettings;
use k8s_endpoints::{ContentType, NotReadyPolicy, PathTemplate, validate_name, validate_namespace};
use secrecy::SecretString;
use serde_yaml::{Mapping, Value};

use super::limits;
use super::probe::{read_probe_defaults, service_probe};
use super::reader::{Reader, get, join};
use super::services::{read_services, read_template};
use super::{
    Config, ConfigError, Consensus, Diagnostic, Environment, Failsafe, FailsafeMode, LeaderBackend,
    LeaderElection, LineIndex, Loaded, MetricsConfig, Mode, NotifyConfig, RedisConfig, Severity,
    Webhook, WebhookFormat,
};

pub(super) const TOP_KEYS: &[&str] = &[
    "interval",
    "pingtimeout",
    "url",
    "endpointapi",
    "content_type",
    "token_file",
    "redis",
    "etcd",
    "service_info",
    "service_healthcheck_list",
    "endpoint_template",
    "probe",
    "not_ready",
    "failsafe",
    "resync_interval",
    "ca_file",
    "insecure_skip_tls_verify",
    "mode",
    "metrics",
    "notify",
    "leader_election",
    "consensus",
    "instance",
    "prune",
];

pub(super) const REDIS_KEYS: &[&str] = &[
    "ipport",
    "password",
    "password_file",
    "username",
    "db",
    "tls",
    "key_prefix",
];

pub(super) const FAILSAFE_KEYS: &[&str] = &["mode", "min_targets", "canary"];

pub(super) const METRICS_KEYS: &[&str] = &["listen", "per_target"];

pub(super) const NOTIFY_KEYS: &[&str] = &["script", "webhooks"];

pub(super) const WEBHOOK_KEYS: &[&str] = &["url", "format", "secret", "secret_file"];

pub(super) const LEADER_KEYS: &[&str] = &[
    "enabled",
    "backend",
    "name",
    "namespace",
    "lease_duration",
    "renew_deadline",
    "retry_period",
];

pub(super) const CONSENSUS_KEYS: &[&str] =
    &["enabled", "quorum", "heartbeat", "ttl", "read_interval"];

/// The standard Endpoints path, used when `endpointapi` is absent.
pub const DEFAULT_ENDPOINT_API: &str = "/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints";

pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_millis(2000);

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

/// Checks `text` (the contents of `path`) and builds the config, or reports every error found.
pub fn check(text: &str, path: &Path, env: &dyn Environment) -> Result<Loaded, ConfigError> {
    let invalid = |errors: Vec<Diagnostic>, warnings| ConfigError::Invalid {
        file: path.to_path_buf(),
        errors,
        warnings,
    };
    let text = limits::strip_byte_order_mark(text);
    if let Err(e) = limits::check_limits(text) {
        return Err(invalid(vec![e], vec![]));
    }
    if text.trim().is_empty() {
        return Err(invalid(
            vec![error_at(
                "",
                None,
                "the file is empty; see the README for the format",
            )],
            vec![],
        ));
    }
    let root: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.location().map(|l| l.line());
            return Err(invalid(
                vec![error_at("", line, &format!("not valid YAML: {e}"))],
                vec![],
            ));
        }
    };
    let mut r = Reader::new(LineIndex::build_with_fallback(text));
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let built = build(&mut r, &root, base_dir, env);
    // Report in file order, whatever order the keys were checked in.
    r.errors.sort_by_key(|d| d.line);
    r.warnings.sort_by_key(|d| d.line);
    match built {
        Some(config) if r.errors.is_empty() => Ok(Loaded {
            config: Config {
                source: path.to_path_buf(),
                ..config
            },
            warnings: r.warnings,
        }),
        _ => Err(invalid(r.errors, r.warnings)),
    }
}

pub(super) fn error_at(key: &str, line: Option<usize>, message: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        key: key.to_string(),
        line,
        message: message.to_string(),
        kind: None,
    }
}

fn build(r: &mut Reader, root: &Value, base_dir: &Path, env: &dyn Environment) -> Option<Config> {
    let top = r.mapping(root, "", TOP_KEYS);
    let (interval_value, timeout_value) = (get(top, "interval"), get(top, "pingtimeout"));
    let interval_read = r.millis(interval_value, "interval");
    let timeout_read = r.millis(timeout_value, "pingtimeout");
    // A value that is present but invalid already has its error; warnings computed from the
    // default in its place would only mislead.
    let interval_ok = interval_value.is_none_or(|_| interval_read.is_some());
    let timeout_ok = timeout_value.is_none_or(|_| timeout_read.is_some());
    let interval = interval_read.unwrap_or(DEFAULT_INTERVAL);
    let timeout = timeout_read.unwrap_or(DEFAULT_TIMEOUT);
    if interval_ok && interval < Duration::from_millis(100) {
        r.warn(
            "interval",
            format!(
                "{} ms is very short: every target is probed that often; 1000-5000 is usual",
                interval.as_millis()
            ),
        );
    }
    if interval_ok && timeout_ok && interval < timeout {
        r.warn(
            "interval",
            format!(
                "interval ({} ms) is shorter than pingtimeout ({} ms): a hanging target is probed \
                 again before its last probe timed out",
                interval.as_millis(),
                timeout.as_millis()
            ),
        );
    }

    let url = read_url(r, get(top, "url"));
    let endpoint_api = {
        let text = r
            .text(get(top, "endpointapi"), "endpointapi")
            .unwrap_or_else(|| DEFAULT_ENDPOINT_API.to_string());
        match PathTemplate::parse(&text) {
            Ok(t) => Some(t),
            Err(e) => {
                r.error("endpointapi", e.to_string());
                None
            }
        }
    };
    let content_type = match r.text(get(top, "content_type"), "content_type") {
        None => ContentType::Yaml,
        Some(t) => match ContentType::from_str(&t) {
            Ok(c) => c,
            Err(e) => {
                r.error("content_type", e.to_string());
                ContentType::Yaml
            }
        },
    };
    let token_file = r
        .text(get(top, "token_file"), "token_file")
        .unwrap_or_default();
    let ca_file = r
        .text(get(top, "ca_file"), "ca_file")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base_dir, &s));
    let insecure = r
        .boolean(
            get(top, "insecure_skip_tls_verify"),
            "insecure_skip_tls_verify",
        )
        .unwrap_or(false);
    if insecure {
        r.warn(
            "insecure_skip_tls_verify",
            "TLS verification of the ApiServer is off: anyone on the path can read the token; \
             set ca_file instead",
        );
    }
    let redis = get(top, "redis").and_then(|v| read_redis(r, v, base_dir, env));
    let etcd = get(top, "etcd").and_then(|v| super::etcd::read_etcd(r, v, base_dir, env));
    let not_ready =
        read_not_ready(r, get(top, "not_ready"), "not_ready").unwrap_or(NotReadyPolicy::Keep);
    let (defaults, concurrency) = read_probe_defaults(r, get(top, "probe"), timeout);
    let template = read_template(r, get(top, "endpoint_template"));
    let services = read_services(
        r,
        top,
        &defaults,
        interval,
        timeout,
        not_ready,
        template.as_ref(),
    );
    let failsafe = read_failsafe(r, get(top, "failsafe"));
    let resync_interval = r
        .millis(get(top, "resync_interval"), "resync_interval")
        .unwrap_or(Duration::from_secs(30));
    let mode = match r.choice(get(top, "mode"), "mode", &["endpoints", "endpointslice"]) {
        Some("endpointslice") => Mode::EndpointSlice,
        _ => Mode::Endpoints,
    };
    let metrics = read_metrics(r, get(top, "metrics"));
    let notify = read_notify(r, get(top, "notify"), base_dir, env);
    let leader_election = read_leader(r, get(top, "leader_election"));
    super::etcd::check_choice(r, redis.as_ref(), etcd.as_ref(), &leader_election);
    let consensus = read_consensus(r, get(top, "consensus"), &leader_election);
    let instance = read_instance(r, get(top, "instance"), &leader_election.name);
    let prune = r.boolean(get(top, "prune"), "prune").unwrap_or(false);

    Some(Config {
        source: PathBuf::new(),
        interval,
        timeout,
        url,
        endpoint_api: endpoint_api?,
        content_type,
        token_file,
        ca_file,
        insecure_skip_tls_verify: insecure,
        redis,
        etcd,
        services,
        endpoint_template: template?,
        probe: service_probe(&defaults, interval, timeout, 1),
        concurrency,
        failsafe,
        resync_interval,
        mode,
        metrics,
        notify,
        leader_election,
        consensus,
        instance,
        prune,
    })
}

/// `consensus` (SPEC §9.1): off by default; on, it needs leader election (the leader decides
/// from every replica's view) and valid timings.
pub(super) fn read_consensus(
    r: &mut Reader,
    value: Option<&Value>,
    leader: &LeaderElection,
) -> Consensus {
    let map = value.and_then(|v| r.mapping(v, "consensus", CONSENSUS_KEYS));
    let p = "consensus";
    let defaults = ConsensusSettings::default();
    let enabled = r
        .boolean(get(map, "enabled"), &join(p, "enabled"))
        .unwrap_or(false);
    let quorum = r
        .integer(get(map, "quorum"), &join(p, "quorum"), 1, 1000)
        .and_then(|q| usize::try_from(q).ok());
    let heartbeat = r
        .millis(get(map, "heartbeat"), &join(p, "heartbeat"))
        .unwrap_or(defaults.heartbeat);
    let read_interval = r
        .millis(get(map, "read_interval"), &join(p, "read_interval"))
        .unwrap_or(defaults.read_interval);
    let ttl = r
        .millis(get(map, "ttl"), &join(p, "ttl"))
        .unwrap_or_else(|| (heartbeat * 3).max(heartbeat + read_interval * 2));
    let settings = ConsensusSettings {
        quorum,
        heartbeat,
        ttl,
        read_interval,
    };
    if let Err(k8s_endpoints::Error::ConsensusConfig { problem }) = settings.validate() {
        r.error(p, problem);
    }
    if enabled && !leader.enabled {
        r.error(
            &join(p, "enabled"),
            "needs leader_election.enabled: true (the leader decides from every replica's view); \
             enable leader election or turn consensus off",
        );
    }
    Consensus { enabled, settings }
}

/// `instance`: the `epcheck.io/instance` label of every object written; by default the
/// leader-election name, which replicas of one deployment share.
pub(super) fn read_instance(r: &mut Reader, value: Option<&Value>, election_name: &str) -> String {
    match r.text(value, "instance") {
        Some(instance) => {
            if let Err(problem) = k8s_endpoints::validate_instance(&instance) {
                r.error(
                    "instance",
                    format!("{instance:?} cannot be a label value: {problem}"),
                );
            }
            instance
        }
        None => {
            if let Err(problem) = k8s_endpoints::validate_instance(election_name) {
                r.error(
                    "leader_election.name",
                    format!(
                        "{election_name:?} names this deployment's objects (label epcheck.io/instance) unless `instance` is set, and cannot be a label value: {problem}; set `instance`"
                    ),
                );
            }
            election_name.to_owned()
        }
    }
}

pub(super) fn resolve(base_dir: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

pub(super) fn read_url(r: &mut Reader, value: Option<&Value>) -> Option<String> {
    let text = r.text(value, "url")?.trim().to_string();
    if text.is_empty() {
        return None;
    }
    // Every message quotes the URL without credentials or query (SPEC §13).
    let shown = k8s_endpoints::client::redact_url(&text);
    let rest = if let Some(rest) = text.strip_prefix("https://") {
        rest
    } else if let Some(rest) = text.strip_prefix("http://") {
        r.warn(
            "url",
            "plain http sends the bearer token unencrypted; use https:// outside a test setup",
        );
        rest
    } else {
        r.error(
            "url",
            format!(
                "{shown:?} is not an ApiServer URL; expected https://host:port (empty = in-cluster)"
            ),
        );
        return None;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        r.error(
            "url",
            format!(
                "{shown:?} carries credentials (user:password@): epcheck authenticates to the \
                 ApiServer with the token file only, and a password in the config would be \
                 copied wherever the config goes; remove them and set token_file"
            ),
        );
        return None;
    }
    if authority.is_empty() || rest.trim_end_matches('/') != authority {
        r.error(
            "url",
            format!(
                "{shown:?} must be a base URL with a host and no path, e.g. https://10.0.0.1:6443"
            ),
        );
        return None;
    }
    Some(text.trim_end_matches('/').to_string())
}

pub(super) fn read_secret(
    r: &mut Reader,
    map: Option<&Mapping>,
    path: &str,
    key: &str,
    base_dir: &Path,
    env_value: Option<String>,
) -> Option<SecretString> {
    let inline = r
        .text(get(map, key), &join(path, key))
        .filter(|s| !s.is_empty());
    let file_key = format!("{key}_file");
    let file = r
        .text(get(map, &file_key), &join(path, &file_key))
        .filter(|s| !s.is_empty());
    if inline.is_some() && file.is_some() {
        r.error(
            &join(path, &file_key),
            format!("set either `{key}` or `{file_key}`, not both"),
        );
    }
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        return Some(SecretString::from(v));
    }
    if let Some(f) = file {
        let p = resolve(base_dir, &f);
        return match std::fs::read_to_string(&p) {
            Ok(s) if !s.trim().is_empty() => Some(SecretString::from(s.trim().to_string())),
            Ok(_) => {
                r.error(&join(path, &file_key), format!("{} is empty", p.display()));
                None
            }
            Err(e) => {
                r.error(
                    &join(path, &file_key),
                    format!("cannot read {}: {e}", p.display()),
                );
                None
            }
        };
    }
    inline.map(SecretString::from)
}

pub(super) fn read_redis(
    r: &mut Reader,
    value: &Value,
    base_dir: &Path,
    env: &dyn Environment,
) -> Option<RedisConfig> {
    let map = r.mapping(value, "redis", REDIS_KEYS);
    let address = r
        .text(get(map, "ipport"), "redis.ipport")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let password = read_secret(
        r,
        map,
        "redis",
        "password",
        base_dir,
        env.var("EPCHECK_REDIS_PASSWORD"),
    );
    let username = r
        .text(get(map, "username"), "redis.username")
        .filter(|s| !s.is_empty());
    let db = r.integer(get(map, "db"), "redis.db", 0, 255).unwrap_or(0) as u8;
    let tls = r.boolean(get(map, "tls"), "redis.tls").unwrap_or(false);
    let key_prefix = r
        .text(get(map, "key_prefix"), "redis.key_prefix")
        .unwrap_or_else(|| "epcheck:".to_string());
    if address.is_empty() {
        // The original format: an empty `redis` means the in-memory store.
        return None;
    }
    let is_url = address.starts_with("redis://") || address.starts_with("rediss://");
    if !is_url && !valid_host_port(&address) {
        r.error(
            "redis.ipport",
            format!("{address:?} is not host:port (e.g. 10.0.0.5:6379) or a redis:// URL"),
        );
        return None;
    }
    Some(RedisConfig {
        address,
        password,
        username,
        db,
        tls,
        key_prefix,
    })
}

/// `host:port` with a port in 1..=65535 (IPv6 hosts in brackets).
pub(super) fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

pub(super) fn read_not_ready(
    r: &mut Reader,
    value: Option<&Value>,
    path: &str,
) -> Option<NotReadyPolicy> {
    match r.choice(value, path, &["keep", "drop"])? {
        "drop" => Some(NotReadyPolicy::Drop),
        _ => Some(NotReadyPolicy::Keep),
    }
}

pub(super) fn read_failsafe(r: &mut Reader, value: Option<&Value>) -> Failsafe {
    let map = value.and_then(|v| r.mapping(v, "failsafe", FAILSAFE_KEYS));
    let mode = match r.choice(get(map, "mode"), "failsafe.mode", &["hold", "off"]) {
        Some("off") => FailsafeMode::Off,
        _ => FailsafeMode::Hold,
    };
    let min_targets = r
        .integer(get(map, "min_targets"), "failsafe.min_targets", 1, 1 << 20)
        .unwrap_or(3) as usize;
    let canary = r
        .text(get(map, "canary"), "failsafe.canary")
        .filter(|s| !s.is_empty())
        .and_then(|s| match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.error(
                    "failsafe.canary",
                    format!("{s:?} is not ip:port (IPv6 as [fd00::1]:443)"),
                );
                None
            }
        });
    Failsafe {
        mode,
        min_targets,
        canary,
    }
}

pub(super) fn read_metrics(r: &mut Reader, value: Option<&Value>) -> MetricsConfig {
    let map = value.and_then(|v| r.mapping(v, "metrics", METRICS_KEYS));
    let listen = match r.text(get(map, "listen"), "metrics.listen") {
        None => Some(SocketAddr::from((
            [0, 0, 0, 0],
            super::DEFAULT_METRICS_PORT,
        ))),
        Some(s) if s.is_empty() || s == "off" => None,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                r.error(
                    "metrics.listen",
                    format!(
                        "{s:?} is not ip:port (e.g. 0.0.0.0:{}), or off",
                        super::DEFAULT_METRICS_PORT
                    ),
                );
                None
            }
        },
    };
    let per_target = r
        .boolean(get(map, "per_target"), "metrics.per_target")
        .unwrap_or(true);
    MetricsConfig { listen, per_target }
}

/// The variable that may hold webhook `i`'s URL (from a Secret, when it carries a credential).
pub fn webhook_url_var(i: usize) -> String {
    format!("EPCHECK_WEBHOOK_{i}_URL")
}

pub(super) fn read_notify(
    r: &mut Reader,
    value: Option<&Value>,
    base_dir: &Path,
    env: &dyn Environment,
) -> NotifyConfig {
    let map = value.and_then(|v| r.mapping(v, "notify", NOTIFY_KEYS));
    let script = r
        .text(get(map, "script"), "notify.script")
        .filter(|s| !s.is_empty())
        .map(|s| resolve(base_dir, &s));
    let mut webhooks = Vec::new();
    if let Some(items) = get(map, "webhooks").and_then(|v| r.sequence(v, "notify.webhooks")) {
        for (i, item) in items.iter().enumerate() {
            let p = format!("notify.webhooks[{i}]");
            let m = r.mapping(item, &p, WEBHOOK_KEYS);
            // A URL that carries a credential (user info, `?access_token=`) can come from the
            // environment instead, i.e. from a Secret (`epcheck manifests` does that).
            let from_file = r
                .text(get(m, "url"), &join(&p, "url"))
                .filter(|s| !s.is_empty());
            let url = env
                .var(&webhook_url_var(i))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .or(from_file);
            let format =
                match r.choice(get(m, "format"), &join(&p, "format"), &["json", "dingtalk"]) {
                    Some("dingtalk") => WebhookFormat::DingTalk,
                    _ => WebhookFormat::Json,
                };
            let secret = read_secret(
                r,
                m,
                &p,
                "secret",
                base_dir,
                env.var(&format!("EPCHECK_WEBHOOK_{i}_SECRET")),
            );
            match url {
                Some(url) if url.starts_with("http://") || url.starts_with("https://") => webhooks
                    .push(Webhook {
                        url,
                        format,
                        secret,
                    }),
                Some(url) => r.error(
                    &join(&p, "url"),
                    format!(
                        "{:?} is not an http(s) URL",
                        k8s_endpoints::client::redact_url(&url)
                    ),
                ),
                None => r.error(
                    &join(&p, "url"),
                    format!(
                        "missing; where to POST the event (the key, or {})",
                        webhook_url_var(i)
                    ),
                ),
            }
        }
    }
    NotifyConfig { script, webhooks }
}

pub(super) fn read_leader(r: &mut Reader, value: Option<&Value>) -> LeaderElection {
    let map = value.and_then(|v| r.mapping(v, "leader_election", LEADER_KEYS));
    let p = "leader_election";
    let enabled = r
        .boolean(get(map, "enabled"), &join(p, "enabled"))
        .unwrap_or(false);
    let backend = match r.choice(
        get(map, "backend"),
        &join(p, "backend"),
        &["lease", "redis", "etcd"],
    ) {
        Some("redis") => LeaderBackend::Redis,
        Some("etcd") => LeaderBackend::Etcd,
        _ => LeaderBackend::Lease,
    };
    let name = r
        .text(get(map, "name"), &join(p, "name"))
        .unwrap_or_else(|| "epcheck".to_string());
    if let Err(e) = validate_name(&name) {
        r.error(&join(p, "name"), e);
    }
    let namespace = r
        .text(get(map, "namespace"), &join(p, "namespace"))
        .filter(|s| !s.is_empty());
    if let Some(ns) = &namespace
        && let Err(e) = validate_namespace(ns)
    {
        r.error(&join(p, "namespace"), e);
    }
    let lease_duration = r
        .millis(get(map, "lease_duration"), &join(p, "lease_duration"))
        .unwrap_or(Duration::from_secs(15));
    let renew_deadline = r
        .millis(get(map, "renew_deadline"), &join(p, "renew_deadline"))
        .unwrap_or(Duration::from_secs(10));
    let retry_period = r
        .millis(get(map, "retry_period"), &join(p, "retry_period"))
        .unwrap_or(Duration::from_secs(2));
    if !(lease_duration > renew_deadline
        && renew_deadline.as_secs_f64() > 1.2 * retry_period.as_secs_f64())
    {
        r.error(
            p,
            format!(
                "need lease_duration > renew_deadline > 1.2 × retry_period; got {} > {} > 1.2 × {} ms",
                lease_duration.as_millis(),
                renew_deadline.as_millis(),
                retry_period.as_millis()
            ),
        );
    }
    LeaderElection {
        enabled,
        backend,
        name,
        namespace,
        lease_duration,
        renew_deadline,
        retry_period,
    }
}
