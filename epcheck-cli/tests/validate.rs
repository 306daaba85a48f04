//! `epcheck validate`.

use crate::util::{Epcheck, seed, seed_path};

#[test]
fn seed_config_is_valid_unchanged() {
    let e = Epcheck::new();
    let r = e.run(&["validate", "-f", seed_path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("valid (3 services, 8 targets"),
        "{}",
        r.stdout
    );
}

#[test]
fn config_is_found_in_the_working_directory() {
    let e = Epcheck::new();
    e.write("config/config.yaml", seed());
    let r = e.run(&["validate"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("config/config.yaml"), "{}", r.stdout);
}

#[test]
fn missing_config_lists_every_place_tried() {
    let e = Epcheck::new();
    let r = e.run(&["validate"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("config.yaml"), "{}", r.stderr);
    assert!(r.stderr.contains("config/config.yaml"), "{}", r.stderr);
    assert!(r.stderr.contains("-f/--config"), "{}", r.stderr);
}

/// Each defect: (what to replace, replacement, key path the error must name, words it must say).
const DEFECTS: &[(&str, &str, &str, &str)] = &[
    (
        "endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints",
        "endpointapi: /api/v1/namespaces/default/endpoints/myEndPoints",
        "endpointapi",
        "myNameSpaces",
    ),
    (
        "  ceph:\n    namespace: default\n    name: ceph\n",
        "",
        "service_healthcheck_list.ceph",
        "service_info",
    ),
    (
        "      - name: node-02\n        ip: 172.16.0.62\n      - name: node-03\n        ip: 172.16.0.63\n  emqx:",
        "      - name: node-01\n        ip: 172.16.0.62\n      - name: node-03\n        ip: 172.16.0.63\n  emqx:",
        "service_healthcheck_list.redis.iplist[1].name",
        "duplicate",
    ),
    (
        "        ip: 172.16.0.62\n      - name: node-03\n        ip: 172.16.0.63\n  emqx:",
        "        ip: 172.16.0.620\n      - name: node-03\n        ip: 172.16.0.63\n  emqx:",
        "service_healthcheck_list.redis.iplist[1].ip",
        "not an IP address",
    ),
    (
        "  emqx:\n    port: 38080",
        "  emqx:\n    port: 70000",
        "service_healthcheck_list.emqx.port",
        "out of range",
    ),
    (
        "pingtimeout: 3000",
        "pingtimout: 3000",
        "pingtimout",
        "did you mean `pingtimeout`",
    ),
    (
        "content_type: application/yaml",
        "content_type: application/xml",
        "content_type",
        "application/json",
    ),
];

#[test]
fn each_defect_exits_2_and_names_the_key() {
    for (from, to, key, words) in DEFECTS {
        let text = seed();
        assert!(
            text.contains(from),
            "seed config no longer contains {from:?}"
        );
        let e = Epcheck::new();
        let path = e.write("broken.yaml", &text.replacen(from, to, 1));
        let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
        assert_eq!(r.code, 2, "defect {key}: {}", r.all());
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {key}: ")))
            .unwrap_or_else(|| panic!("no line names {key}:\n{}", r.stdout));
        assert!(line.contains(words), "defect {key}: {line}");
        assert!(line.starts_with(&format!("{}:", path.display())), "{line}");
    }
}

#[test]
fn every_error_is_reported_at_once_with_lines() {
    let text = seed()
        .replacen("pingtimeout: 3000", "pingtimeout: -5", 1)
        .replacen("ip: 172.16.0.63", "ip: nope", 1)
        .replacen(
            "  emqx:\n    port: 38080",
            "  emqx:\n    port: 0\n    colour: red",
            1,
        );
    let e = Epcheck::new();
    let path = e.write("c.yaml", &text);
    let r = e.run(&["validate", "-f", path.to_str().unwrap(), "-o", "json"]);
    assert_eq!(r.code, 2, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let keys: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"pingtimeout"), "{keys:?}");
    assert!(
        keys.contains(&"service_healthcheck_list.redis.iplist[2].ip"),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"service_healthcheck_list.emqx.colour"),
        "{keys:?}"
    );
    for err in v["errors"].as_array().unwrap() {
        assert!(err["line"].as_u64().is_some(), "no line: {err}");
    }
    // port 0 with no other probe: a warning, not an error.
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w["key"] == "service_healthcheck_list.emqx.port"),
        "{warnings:?}"
    );
}

#[test]
fn strict_fails_on_warnings() {
    let text = seed().replacen("ip: 172.16.0.61", "ip: 127.0.0.1", 1);
    let e = Epcheck::new();
    let path = e.write("c.yaml", &text);
    let p = path.to_str().unwrap();
    let r = e.run(&["validate", "-f", p]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("loopback"), "{}", r.stdout);
    let r = e.run(&["validate", "--strict", "-f", p]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn token_file_is_checked() {
    let e = Epcheck::new();
    let path = e.write("c.yaml", seed());
    let p = path.to_str().unwrap();
    // `token_file: default` looks in ./token then ./conf/token.
    let r = e.run(&["validate", "-f", p]);
    assert!(r.stdout.contains("conf/token"), "{}", r.stdout);
    e.write("conf/token", "abc.def\n");
    let r = e.run(&["validate", "-f", p]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stdout.contains("token_file"), "{}", r.stdout);
    assert!(
        !r.all().contains("abc.def"),
        "the token leaked: {}",
        r.all()
    );
}

#[test]
fn secrets_are_never_echoed() {
    let text = seed().replacen("password: 123", "password: s3cr3t-pw\n  bogus: 1", 1);
    let e = Epcheck::new();
    let path = e.write("c.yaml", &text);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("redis.bogus"), "{}", r.stdout);
    assert!(!r.all().contains("s3cr3t-pw"), "{}", r.all());
}

#[test]
fn bad_usage_exits_2() {
    let e = Epcheck::new();
    let r = e.run(&["validate", "--no-such-flag"]);
    assert_eq!(r.code, 2, "{}", r.all());
    let r = e.run(&["frobnicate"]);
    assert_eq!(r.code, 2, "{}", r.all());
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let e = Epcheck::new();
    e.write("conf/token", "abc");
    e.write("ca.crt", "not a certificate\n");
    let text = seed().replacen(
        "token_file: default",
        "token_file: default\nca_file: ca.crt",
        1,
    );
    let path = e.write("c.yaml", &text);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("ca_file"))
        .unwrap_or_default();
    assert!(line.contains("no PEM certificate"), "{}", r.stdout);
    assert!(line.contains("error"), "{}", r.stdout);
    // A real CA (the stand-in ApiServer's, made at test time) passes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt
        .block_on(fixtures::apiserver::ApiServer::builder().tls(true).start())
        .unwrap();
    api.write_ca_pem(e.path("ca.crt")).unwrap();
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert!(!r.stdout.contains("ca_file"), "{}", r.stdout);
    assert_eq!(r.code, 0, "{}", r.all());
}

/// Issue 18: `validate` exited 0 when a token or CA file the config names was missing. A file
/// named explicitly must exist (exit 2 without `--strict`); a token missing from a default
/// location is a warning, and `--strict` fails on it (SPEC §13).
#[test]
fn a_missing_token_or_ca_file_fails_as_the_readme_says() {
    let e = Epcheck::new();
    let run = |text: &str, strict: bool| {
        let path = e.write("c.yaml", text);
        let p = path.to_str().unwrap();
        if strict {
            e.run(&["validate", "--strict", "-f", p])
        } else {
            e.run(&["validate", "-f", p])
        }
    };
    // The seed config says `token_file: default`: ./token or ./conf/token, neither here.
    let r = run(seed(), false);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("warning: token_file"), "{}", r.stdout);
    assert!(r.stdout.contains("--strict"), "{}", r.stdout);
    let r = run(seed(), true);
    assert_eq!(r.code, 2, "{}", r.all());
    // A token file named by path: missing is an error, strict or not.
    let named = seed().replacen("token_file: default", "token_file: secrets/token", 1);
    for strict in [false, true] {
        let r = run(&named, strict);
        assert_eq!(r.code, 2, "strict {strict}: {}", r.all());
        assert!(r.stdout.contains("error: token_file"), "{}", r.stdout);
        assert!(r.stdout.contains("secrets/token"), "{}", r.stdout);
        assert!(r.stdout.contains("invalid (1 error)"), "{}", r.stdout);
    }
    e.write("secrets/token", "abc.def\n");
    let r = run(&named, false);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.stdout.contains("token_file"), "{}", r.stdout);
    // A CA file named by path: missing is an error, strict or not.
    let with_ca = named.replacen(
        "token_file: secrets/token",
        "token_file: secrets/token\nca_file: secrets/ca.crt",
        1,
    );
    for strict in [false, true] {
        let r = run(&with_ca, strict);
        assert_eq!(r.code, 2, "strict {strict}: {}", r.all());
        assert!(r.stdout.contains("error: ca_file"), "{}", r.stdout);
        assert!(r.stdout.contains("secrets/ca.crt"), "{}", r.stdout);
    }
}

/// The etcd section (SPEC §3.3): its keys are checked, with the line, and it cannot sit beside
/// `redis`; the password never shows.
#[cfg(feature = "etcd")]
#[test]
fn the_etcd_section_is_checked_with_its_lines() {
    let e = Epcheck::new();
    let redis = "redis:\n  ipport: 172.16.0.61:6379\n  password: 123\n";
    assert!(seed().contains(redis));
    let etcd = "etcd:\n  endpoints:\n    - https://198.51.100.5:2379\n  username: epcheck\n  \
                password: Etcd-pa55-word\n";
    let good = seed().replace(redis, etcd);
    let path = e.write("good.yaml", &good);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!r.all().contains("Etcd-pa55-word"), "{}", r.all());

    let bad = seed().replace(
        redis,
        &format!("{redis}etcd:\n  endpoints: [\"unix:///run/etcd.sock\"]\n  cert_file: /nonexistent/c.pem\n"),
    );
    let line = bad.lines().position(|l| l == "etcd:").unwrap() + 1;
    let path = e.write("bad.yaml", &bad);
    let r = e.run(&["validate", "-f", path.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    let out = r.all();
    assert!(
        out.contains(&format!(
            "bad.yaml:{line}: error: etcd: a redis and an etcd section"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "bad.yaml:{}: error: etcd.endpoints: \"unix:///run/etcd.sock\": unsupported scheme",
            line + 1
        )),
        "{out}"
    );
    assert!(!r.all().contains("pa55"), "{}", r.all());
}
