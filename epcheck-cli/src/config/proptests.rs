//! Property tests of the config loader (SPEC §12: parsers of untrusted input never panic).
//!
//! Inputs: arbitrary text; YAML-ish token soup; arbitrary YAML trees built from the config's
//! own vocabulary; and the seed config mutated (a key deleted, renamed or duplicated, a value
//! replaced by a random scalar, list or map, a line dropped, the text cut short). For every
//! input [`check`] returns without panicking, and every error names its key path (or is about
//! the whole file) and, when the key is in the file, its line. Secrets are never echoed. A valid
//! generated config loads back with the values it was written with.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p epcheck-cli --lib config::proptests`
//! (see FUZZING.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

use super::{ConfigError, FailsafeMode, Loaded, Severity, check};
use k8s_endpoints::{ContentType, NotReadyPolicy};

/// A directory that does not exist, so `*_file` keys never read anything real.
const FILE: &str = "/nonexistent-epcheck-proptest/config.yaml";

/// A password that must never be echoed back.
const SECRET: &str = "pw-7hq2xk9dz4";

fn load(text: &str) -> Result<Loaded, ConfigError> {
    check(text, Path::new(FILE), &HashMap::<String, String>::new())
}

/// Keys the loader knows, at every level, plus near misses.
const KEYS: &[&str] = &[
    "interval",
    "pingtimeout",
    "url",
    "endpointapi",
    "content_type",
    "token_file",
    "redis",
    "ipport",
    "password",
    "db",
    "tls",
    "key_prefix",
    "service_info",
    "namespace",
    "name",
    "service_healthcheck_list",
    "port",
    "iplist",
    "ip",
    "ports",
    "protocol",
    "endpoint_template",
    "kind",
    "apiVersion",
    "metadata",
    "subsets",
    "addresses",
    "probe",
    "rise",
    "fall",
    "fast_interval",
    "jitter",
    "concurrency",
    "send",
    "expect",
    "http",
    "path",
    "expect_status",
    "not_ready",
    "failsafe",
    "mode",
    "min_targets",
    "canary",
    "resync_interval",
    "insecure_skip_tls_verify",
    "metrics",
    "listen",
    "leader_election",
    "enabled",
    "backend",
    "lease_duration",
    "consensus",
    "quorum",
    "heartbeat",
    "ttl",
    "redis2",
    "intervall",
    "iplst",
];

/// Scalars the loader might take for something meaningful.
const WORDS: &[&str] = &[
    "198.51.100.7",
    "203.0.113.9",
    "fd00::1",
    "::1",
    "127.0.0.1",
    "not-an-ip",
    "203.0.113.1:6379",
    "[fd00::1]:443",
    "https://203.0.113.1:6443",
    "http://203.0.113.1:6443",
    "ftp://x",
    "/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints",
    "/api/v1/x",
    "application/json",
    "application/yaml",
    "text/plain",
    "keep",
    "drop",
    "hold",
    "off",
    "tcp",
    "http",
    "exec",
    "endpoints",
    "endpointslice",
    "lease",
    "Endpoints",
    "v1",
    "TCP",
    "UDP",
    "default",
    "",
    "~",
    "0x10",
    "1e3",
    "-1",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        (-3i64..70_000).prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
        // No `/`: relative paths then stay inside the directory that does not exist.
        "[a-zA-Z0-9 .:_*&!-]{0,16}".prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(|s| Value::String(s.to_owned())),
        1 => "[a-z_]{1,10}".prop_map(Value::String),
        1 => scalar(),
    ]
}

/// Any YAML tree: scalars, lists and maps nested a few levels deep.
fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Mapping(kv.into_iter().collect::<Mapping>())),
        ]
    })
}

/// A top-level map with the config's keys and random values.
fn config_like() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), tree()), 0..12).prop_map(|kv| {
        Value::Mapping(
            kv.into_iter()
                .map(|(k, v)| (Value::String(k.to_owned()), v))
                .collect(),
        )
    })
}

/// YAML-ish token soup, so parsing gets past the first byte.
fn yamlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(KEYS).prop_map(|k| format!("{k}:")),
            prop::sample::select(WORDS).prop_map(str::to_owned),
            Just("\n".to_owned()),
            Just("\n  ".to_owned()),
            Just("\n    - ".to_owned()),
            Just(" ".to_owned()),
            Just("- ".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just(", ".to_owned()),
            Just("&a ".to_owned()),
            Just("*a".to_owned()),
            Just("<<: *a".to_owned()),
            Just("!!binary ".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("#".to_owned()),
            Just("---\n".to_owned()),
            Just("\t".to_owned()),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

/// One way to break the seed config.
#[derive(Debug, Clone)]
enum Mutation {
    /// Delete the key reached by following the indices.
    Delete(Vec<usize>),
    /// Replace the value reached by following the indices.
    Replace(Vec<usize>, Value),
    /// Rename the key reached by following the indices.
    Rename(Vec<usize>, Value),
    /// Repeat line `n` (mod the line count) right after itself: a duplicate key.
    DuplicateLine(usize),
    /// Drop line `n`.
    DropLine(usize),
    /// Cut the text at byte `n` (on a character boundary).
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(any::<usize>(), 1..6);
    prop_oneof![
        path.clone().prop_map(Mutation::Delete),
        (path.clone(), tree()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        (path, key()).prop_map(|(p, k)| Mutation::Rename(p, k)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::DropLine),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// The seed config as a tree, with a password that must stay secret.
fn seed_tree() -> Value {
    let mut root: Value = serde_yaml::from_str(fixtures::configs::SEED_CONFIG).unwrap();
    root["redis"]["password"] = Value::String(SECRET.to_owned());
    root
}

/// Follows `path` (each index taken modulo the size of the map or list met) and applies `f` to
/// the container holding the last step and the key or index chosen there.
fn at_path(root: &mut Value, path: &[usize], f: &mut dyn FnMut(&mut Value, usize)) {
    let Some((&last, rest)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for &i in rest {
        let idx = match &*node {
            Value::Mapping(m) if !m.is_empty() => i % m.len(),
            Value::Sequence(s) if !s.is_empty() => i % s.len(),
            _ => break,
        };
        node = match node {
            Value::Mapping(m) => m.values_mut().nth(idx).expect("index in range"),
            Value::Sequence(s) => &mut s[idx],
            other => other,
        };
    }
    f(node, last);
}

fn mutate(m: &Mutation) -> String {
    let mut root = seed_tree();
    match m {
        Mutation::Delete(p) => at_path(&mut root, p, &mut |node, i| match node {
            Value::Mapping(map) if !map.is_empty() => {
                let k = map.keys().nth(i % map.len()).cloned().unwrap();
                map.remove(&k);
            }
            Value::Sequence(s) if !s.is_empty() => {
                let n = s.len();
                s.remove(i % n);
            }
            _ => {}
        }),
        Mutation::Replace(p, v) => at_path(&mut root, p, &mut |node, i| match node {
            Value::Mapping(map) if !map.is_empty() => {
                let n = map.len();
                if let Some(slot) = map.values_mut().nth(i % n) {
                    *slot = v.clone();
                }
            }
            Value::Sequence(s) if !s.is_empty() => {
                let n = s.len();
                s[i % n] = v.clone();
            }
            other => *other = v.clone(),
        }),
        Mutation::Rename(p, k) => at_path(&mut root, p, &mut |node, i| {
            if let Value::Mapping(map) = node
                && !map.is_empty()
            {
                let old = map.keys().nth(i % map.len()).cloned().unwrap();
                let v = map.remove(&old).unwrap();
                map.insert(k.clone(), v);
            }
        }),
        _ => {}
    }
    let text = serde_yaml::to_string(&root).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    match *m {
        Mutation::DuplicateLine(n) if !lines.is_empty() => {
            let n = n % lines.len();
            let mut out = lines[..=n].to_vec();
            out.extend_from_slice(&lines[n..]);
            out.join("\n")
        }
        Mutation::DropLine(n) if !lines.is_empty() => {
            let n = n % lines.len();
            let mut out = lines.clone();
            out.remove(n);
            out.join("\n")
        }
        Mutation::Truncate(n) => {
            let mut cut = n % (text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_owned()
        }
        _ => text,
    }
}

/// The properties every outcome of [`check`] has, whatever the input.
fn assert_well_formed(text: &str) -> Result<(), TestCaseError> {
    let result = load(text);
    let (errors, warnings) = match &result {
        Ok(loaded) => (Vec::new(), loaded.warnings.clone()),
        Err(ConfigError::Invalid {
            errors, warnings, ..
        }) => {
            prop_assert!(!errors.is_empty(), "invalid without an error");
            (errors.clone(), warnings.clone())
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!("check() is pure: {other}")));
        }
    };
    // Lines as YAML counts them: LF, CR, CRLF, NEL, LS and PS all end one.
    let line_count = 1 + text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count();
    let root: Option<Value> = serde_yaml::from_str(text).ok();
    let top: Option<&Mapping> = root.as_ref().and_then(Value::as_mapping);
    let secret_in_place = secret_only_as_password(root.as_ref());
    for d in errors.iter().chain(&warnings) {
        prop_assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
        if let Some(line) = d.line {
            prop_assert!(
                (1..=line_count + 1).contains(&line),
                "line {line} outside the file ({line_count} lines): {d:?}"
            );
        }
        if d.key.is_empty() {
            // Only findings about the whole file have no key.
            let whole_file = text.trim().is_empty()
                || d.message.starts_with("not valid YAML")
                || (top.is_none() && d.message.starts_with("expected a map"));
            prop_assert!(whole_file, "a finding without a key path: {d:?}");
        } else if let Some(top) = top {
            // A key that is in the file gets a line.
            let first = d.key.split(['.', '[']).next().unwrap_or_default();
            if top.contains_key(first) {
                prop_assert!(d.line.is_some(), "no line for a key in the file: {d:?}");
            }
        }
        if secret_in_place {
            prop_assert!(!d.message.contains(SECRET), "the secret echoed: {d:?}");
        }
    }
    if let Err(e) = &result {
        let shown = e.to_string();
        prop_assert!(
            shown.contains(FILE),
            "the error does not name the file: {shown}"
        );
        if secret_in_place {
            prop_assert!(!shown.contains(SECRET), "the secret echoed: {shown}");
        }
        prop_assert!(errors.iter().all(|d| d.severity == Severity::Error));
    }
    Ok(())
}

/// Whether [`SECRET`] appears only at `redis.password` (a mutation may move it elsewhere, where
/// the loader cannot know it is a secret).
fn secret_only_as_password(root: Option<&Value>) -> bool {
    fn clean(v: &Value) -> bool {
        match v {
            Value::String(s) => !s.contains(SECRET),
            Value::Sequence(items) => items.iter().all(clean),
            Value::Mapping(m) => m.iter().all(|(k, v)| clean(k) && clean(v)),
            Value::Tagged(t) => clean(&t.value),
            _ => true,
        }
    }
    let Some(Value::Mapping(top)) = root else {
        return root.is_none_or(clean);
    };
    top.iter().all(|(k, v)| {
        clean(k)
            && match (k.as_str(), v) {
                (Some("redis"), Value::Mapping(redis)) => redis
                    .iter()
                    .all(|(rk, rv)| clean(rk) && (rk.as_str() == Some("password") || clean(rv))),
                _ => clean(v),
            }
    })
}

/// A valid config, as the values it is written from.
/// A generated service: key, namespace, name, port, [(node name, ip)].
type GenService = (String, String, String, u16, Vec<(String, IpAddr)>);

#[derive(Debug, Clone)]

struct Model {
    interval: u64,
    timeout: u64,
    url: String,
    json: bool,
    token_file: String,
    redis: Option<(String, String)>,
    rise: u32,
    fall: u32,
    fast: u64,
    keep: bool,
    hold: bool,
    min_targets: usize,
    resync: u64,
    /// key → (namespace, name, port, [(node name, ip)])
    services: Vec<GenService>,
    /// Whether to write with flow-style maps (`{a: 1}`).
    flow: bool,
}

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z]([-a-z0-9]{0,10}[a-z0-9])?"
}

fn model() -> impl Strategy<Value = Model> {
    let service = (
        dns_label(),
        dns_label(),
        1u16..=65535,
        prop::collection::btree_set(0u8..=254, 1..6),
    )
        .prop_map(|(ns, name, port, hosts)| {
            let targets = hosts
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    (
                        format!("node-{:02}", i + 1),
                        IpAddr::from([198, 51, 100, h]),
                    )
                })
                .collect::<Vec<_>>();
            (ns, name, port, targets)
        });
    let services = prop::collection::btree_map("[a-z]([a-z0-9_]{0,7}[a-z0-9])?", service, 1..4);
    (
        (
            100u64..100_000,
            1u64..100_000,
            1u8..=254,
            1u16..=65535,
            any::<bool>(),
        ),
        (
            prop_oneof![
                Just(String::new()),
                Just("default".to_owned()),
                "[a-z]{1,8}"
            ],
            prop::option::of(("[0-9]{1,3}", "[a-z]{0,6}:")),
        ),
        (
            1u32..=100,
            1u32..=100,
            1u64..10_000,
            any::<bool>(),
            any::<bool>(),
        ),
        (1usize..1000, 1u64..1_000_000, services, any::<bool>()),
    )
        .prop_map(
            |(
                (interval, timeout, host, port, json),
                (token_file, redis),
                (rise, fall, fast, keep, hold),
                (min_targets, resync, services, flow),
            )| {
                // Two services may not own one object: make names unique by the key.
                let services = services
                    .into_iter()
                    .map(|(key, (ns, name, port, targets))| {
                        let name = format!("{name}-{}", key.replace('_', "-"));
                        (key, ns, name, port, targets)
                    })
                    .collect();
                Model {
                    interval,
                    timeout: timeout.min(interval),
                    url: format!("https://203.0.113.{host}:{port}"),
                    json,
                    token_file,
                    redis: redis.map(|(last, prefix)| (format!("203.0.113.{last}:6379"), prefix)),
                    rise,
                    fall,
                    fast,
                    keep,
                    hold,
                    min_targets,
                    resync,
                    services,
                    flow,
                }
            },
        )
}

fn render(m: &Model) -> String {
    let mut t = format!(
        "# generated\ninterval: {}\npingtimeout: {}\nurl: {}\ncontent_type: application/{}\n\
         token_file: \"{}\"\nnot_ready: {}\nresync_interval: {}\n",
        m.interval,
        m.timeout,
        m.url,
        if m.json { "json" } else { "yaml" },
        m.token_file,
        if m.keep { "keep" } else { "drop" },
        m.resync,
    );
    if m.flow {
        t.push_str(&format!(
            "probe: {{rise: {}, fall: {}, fast_interval: {}}}\nfailsafe: {{mode: {}, min_targets: {}}}\n",
            m.rise,
            m.fall,
            m.fast,
            if m.hold { "hold" } else { "off" },
            m.min_targets
        ));
    } else {
        t.push_str(&format!(
            "probe:\n  rise: {}\n  fall: {}\n  fast_interval: {}\nfailsafe:\n  mode: {}\n  min_targets: {}\n",
            m.rise,
            m.fall,
            m.fast,
            if m.hold { "hold" } else { "off" },
            m.min_targets
        ));
    }
    if let Some((addr, prefix)) = &m.redis {
        t.push_str(&format!(
            "redis:\n  ipport: {addr}\n  password: {SECRET}\n  key_prefix: \"{prefix}\"\n"
        ));
    }
    t.push_str("service_info:\n");
    for (key, ns, name, _, _) in &m.services {
        t.push_str(&format!(
            "  {key}:\n    namespace: {ns}\n    name: {name}\n"
        ));
    }
    t.push_str("service_healthcheck_list:\n");
    for (key, _, _, port, targets) in &m.services {
        t.push_str(&format!("  {key}:\n    port: {port}\n    iplist:\n"));
        for (name, ip) in targets {
            if m.flow {
                t.push_str(&format!("      - {{name: {name}, ip: \"{ip}\"}}\n"));
            } else {
                t.push_str(&format!("      - name: {name}\n        ip: {ip}\n"));
            }
        }
    }
    t.push_str(
        "endpoint_template:\n  kind: Endpoints\n  apiVersion: v1\n  subsets:\n    - ports:\n\
         \x20       - port: 6379\n          protocol: TCP\n",
    );
    t
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        assert_well_formed(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        assert_well_formed(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn yamlish_text_never_panics(text in yamlish()) {
        assert_well_formed(&text)?;
    }

    #[test]
    fn arbitrary_config_trees_are_diagnosed(tree in config_like()) {
        assert_well_formed(&serde_yaml::to_string(&tree).unwrap())?;
    }

    #[test]
    fn arbitrary_trees_are_diagnosed(tree in tree()) {
        assert_well_formed(&serde_yaml::to_string(&tree).unwrap())?;
    }

    #[test]
    fn seed_mutations_are_diagnosed(m in prop::collection::vec(mutation(), 1..4)) {
        // Apply the first mutation to the tree; later ones go to the resulting text's tree when
        // it still parses.
        let mut text = mutate(&m[0]);
        for more in &m[1..] {
            let Ok(tree) = serde_yaml::from_str::<Value>(&text) else { break };
            let mut root = tree;
            if let Mutation::Replace(p, v) = more {
                at_path(&mut root, p, &mut |node, i| {
                    if let Value::Mapping(map) = node && !map.is_empty() {
                        let n = map.len();
                        if let Some(slot) = map.values_mut().nth(i % n) {
                            *slot = v.clone();
                        }
                    }
                });
            }
            text = serde_yaml::to_string(&root).unwrap();
        }
        assert_well_formed(&text)?;
    }

    #[test]
    fn valid_configs_load_back(m in model()) {
        let text = render(&m);
        let loaded = match load(&text) {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n--- text:\n{text}"))),
        };
        assert_well_formed(&text)?;
        let c = loaded.config;
        prop_assert_eq!(c.interval, Duration::from_millis(m.interval));
        prop_assert_eq!(c.timeout, Duration::from_millis(m.timeout));
        prop_assert_eq!(c.url.as_deref(), Some(m.url.as_str()));
        prop_assert_eq!(c.content_type, if m.json { ContentType::Json } else { ContentType::Yaml });
        prop_assert_eq!(&c.token_file, &m.token_file);
        prop_assert_eq!(c.resync_interval, Duration::from_millis(m.resync));
        prop_assert_eq!(c.probe.rise, m.rise);
        prop_assert_eq!(c.probe.fall, m.fall);
        prop_assert_eq!(c.probe.fast_interval, Duration::from_millis(m.fast));
        prop_assert_eq!(c.failsafe.mode, if m.hold { FailsafeMode::Hold } else { FailsafeMode::Off });
        prop_assert_eq!(c.failsafe.min_targets, m.min_targets);
        match (&c.redis, &m.redis) {
            (None, None) => {}
            (Some(r), Some((addr, prefix))) => {
                prop_assert_eq!(&r.address, addr);
                prop_assert_eq!(&r.key_prefix, prefix);
                prop_assert!(r.password.is_some());
            }
            (got, want) => prop_assert!(false, "redis {:?} vs {:?}", got.is_some(), want),
        }
        let policy = if m.keep { NotReadyPolicy::Keep } else { NotReadyPolicy::Drop };
        prop_assert_eq!(c.services.len(), m.services.len());
        let mut want = m.services.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        for (s, (key, ns, name, port, targets)) in c.services.iter().zip(&want) {
            prop_assert_eq!(&s.key, key);
            prop_assert_eq!(&s.namespace, ns);
            prop_assert_eq!(&s.name, name);
            prop_assert_eq!(s.port, *port);
            prop_assert_eq!(s.not_ready, policy);
            prop_assert_eq!(s.probe.rise, m.rise);
            prop_assert_eq!(s.probe.interval, Duration::from_millis(m.interval));
            let got: Vec<(String, IpAddr)> =
                s.targets.iter().map(|t| (t.name.clone(), t.ip)).collect();
            prop_assert_eq!(&got, targets);
        }
        prop_assert!(!format!("{c:?}").contains(SECRET), "the secret in Debug output");
    }
}

/// Found by these properties: the line index comes from a second parser (yaml-rust2) that stops
/// at a tab after `key:`, which serde_yaml accepts; every later finding had no line.
#[test]
fn a_tab_after_a_colon_keeps_the_lines() {
    let text = "url: ftp://x\ninterval:\t500\npingtimeout: x\nresync_interval: y\n";
    let Err(ConfigError::Invalid { errors, .. }) = load(text) else {
        panic!("expected errors");
    };
    let lines: Vec<(String, Option<usize>)> =
        errors.iter().map(|d| (d.key.clone(), d.line)).collect();
    assert_eq!(
        lines,
        vec![
            ("url".to_owned(), Some(1)),
            ("pingtimeout".to_owned(), Some(3)),
            ("resync_interval".to_owned(), Some(4)),
        ]
    );
}

/// Found by these properties: an unknown top-level key `''` was reported with an empty key path.
#[test]
fn an_empty_top_level_key_is_named() {
    let Err(ConfigError::Invalid { errors, .. }) = load("'': 1\n") else {
        panic!("expected errors");
    };
    assert!(errors.iter().all(|d| !d.key.is_empty()), "{errors:?}");
}
