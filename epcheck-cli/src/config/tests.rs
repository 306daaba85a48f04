//! Unit tests of loading: defaults, input limits and what `validate` reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use super::{ConfigError, Loaded, check};

const FILE: &str = "/nonexistent-epcheck-test/config.yaml";

fn load(text: &str) -> Result<Loaded, ConfigError> {
    check(text, Path::new(FILE), &HashMap::<String, String>::new())
}

fn seed() -> &'static str {
    fixtures::configs::SEED_CONFIG
}

#[test]
fn the_default_metrics_port_is_not_the_prometheus_servers() {
    let c = load(seed()).unwrap().config;
    let listen = c.metrics.listen.unwrap();
    assert_eq!(listen, "0.0.0.0:9087".parse::<SocketAddr>().unwrap());
    assert_ne!(listen.port(), 9090, "9090 is Prometheus' own port");
}

fn errors(text: &str) -> Vec<super::Diagnostic> {
    match load(text) {
        Err(ConfigError::Invalid { errors, .. }) => errors,
        Err(e) => panic!("expected Invalid, got {e}"),
        Ok(_) => panic!("expected errors"),
    }
}

/// Issue 18: `key: ` then 200,000 `[` took 15-45 s to reject. It is now rejected by the depth
/// limit, before any parser builds a tree, with the line where the limit was passed.
#[test]
fn deeply_nested_flow_sequences_are_rejected_by_the_depth_limit() {
    let text = format!("interval: 2000\nkey: {}\n", "[".repeat(200_000));
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("nested deeper than"),
        "{errors:?}"
    );
    assert_eq!(errors[0].line, Some(2));
}

#[test]
fn deeply_nested_flow_mappings_are_rejected_by_the_depth_limit() {
    let text = format!("{}{}\n", "\n".repeat(3), "{a: ".repeat(100_000));
    let errors = errors(&text);
    assert!(
        errors[0].message.contains("nested deeper than"),
        "{errors:?}"
    );
    assert_eq!(errors[0].line, Some(4));
}

#[test]
fn deeply_nested_block_mappings_are_rejected_by_the_depth_limit() {
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
    }
    let errors = errors(&text);
    assert!(
        errors[0].message.contains("nested deeper than"),
        "{errors:?}"
    );
}

/// Real configs nest a few levels; the limit leaves them plenty of room.
#[test]
fn the_seed_config_is_far_from_the_limits() {
    assert!(load(seed()).is_ok());
    let nested = format!(
        "{}\nendpoint_template_annotations_probe: {}1{}\n",
        seed(),
        "[".repeat(30),
        "]".repeat(30)
    );
    // Unknown key, but not a depth error.
    let errors = errors(&nested);
    assert!(
        errors.iter().all(|e| !e.message.contains("nested deeper")),
        "{errors:?}"
    );
}

#[test]
fn an_oversized_file_is_rejected_before_parsing() {
    let text = format!("# {}\n", "x".repeat(super::limits::MAX_BYTES));
    let errors = errors(&text);
    assert!(errors[0].message.contains("MiB"), "{errors:?}");
}

/// Issue 18: a UTF-8 byte-order mark (as some Windows editors write) was rejected as a
/// multi-document file.
#[test]
fn a_byte_order_mark_is_accepted() {
    let text = format!("\u{feff}{}", seed());
    let loaded = load(&text).unwrap();
    assert_eq!(loaded.config.services.len(), 3);
    // Lines are still counted from the first line of the file.
    let broken = format!(
        "\u{feff}{}",
        seed().replacen("interval: 2000", "interval: x", 1)
    );
    let errors = errors(&broken);
    let line = seed()
        .lines()
        .position(|l| l.starts_with("interval:"))
        .unwrap()
        + 1;
    assert_eq!(errors[0].line, Some(line), "{errors:?}");
}

/// Issue 18: an ApiServer `url` with `user:password@` was accepted by `validate` and printed
/// whole by `once`. It is an error that names the key and never shows the password.
#[test]
fn a_url_with_a_password_is_an_error_that_does_not_show_it() {
    let text = seed().replacen("url: https://", "url: https://admin:hunter2-pw@", 1);
    assert!(text.contains("hunter2-pw"), "the seed's url changed");
    let found = errors(&text);
    let e = found.iter().find(|e| e.key == "url").unwrap();
    assert!(e.message.contains("carries credentials"), "{e:?}");
    assert!(e.message.contains("https://***@"), "{e:?}");
    assert!(!format!("{found:?}").contains("hunter2-pw"));
    // A malformed one is quoted without its credentials too.
    let text = seed().replacen("url: https://", "url: ftp://admin:hunter2-pw@", 1);
    assert!(!format!("{:?}", errors(&text)).contains("hunter2-pw"));
}

/// `instance` names the deployment's objects: by default the election name, and only what
/// a label value can hold.
#[test]
fn instance_defaults_to_the_election_name_and_must_be_a_label_value() {
    let c = load(seed()).unwrap().config;
    assert_eq!((c.instance.as_str(), c.prune), ("epcheck", false));
    let named = format!("{}\ninstance: team-a\nprune: true\n", seed());
    let c = load(&named).unwrap().config;
    assert_eq!((c.instance.as_str(), c.prune), ("team-a", true));
    let from_election = format!("{}\nleader_election: {{name: ops.lock}}\n", seed());
    assert_eq!(load(&from_election).unwrap().config.instance, "ops.lock");
    let bad = errors(&format!("{}\ninstance: \"a/b\"\n", seed()));
    assert!(
        bad.iter()
            .any(|d| d.key == "instance" && d.message.contains("'/'")),
        "{bad:?}"
    );
    let long = format!(
        "{}\nleader_election: {{name: {}}}\n",
        seed(),
        "x".repeat(70)
    );
    let bad = errors(&long);
    assert!(
        bad.iter()
            .any(|d| d.key == "leader_election.name" && d.message.contains("set `instance`")),
        "{bad:?}"
    );
}

#[test]
fn half_open_reaches_every_connect_check_and_is_flagged_with_a_conversation() {
    use probe_core::Check;
    let plain = load(seed()).unwrap().config;
    let half = load(&format!("{}\nprobe: {{half_open: true}}\n", seed()))
        .unwrap()
        .config;
    let tcp = |c: &super::Config| -> Vec<bool> {
        c.services
            .iter()
            .filter_map(|s| match &s.probe.check {
                Check::Tcp(t) => Some(t.half_open),
                _ => None,
            })
            .collect()
    };
    assert!(!tcp(&plain).is_empty() && tcp(&plain).iter().all(|h| !h));
    assert!(tcp(&half).iter().all(|h| *h), "{:?}", tcp(&half));
    let talk = load(&format!(
        "{}\nprobe: {{half_open: true, send: \"PING\\r\\n\", expect: \"+PONG\"}}\n",
        seed()
    ))
    .unwrap();
    assert!(
        talk.warnings.iter().any(
            |w| w.key.ends_with("half_open") && w.message.contains("plain connect checks only")
        ),
        "{:?}",
        talk.warnings
    );
    let bad = errors(&format!("{}\nprobe: {{half_open: maybe}}\n", seed()));
    assert!(bad.iter().any(|d| d.key == "probe.half_open"), "{bad:?}");
}

#[test]
fn consensus_is_off_by_default_and_needs_leader_election_and_sane_timings() {
    use std::time::Duration;
    let c = load(seed()).unwrap().config;
    assert!(!c.consensus.enabled);
    assert_eq!(
        c.consensus.settings,
        k8s_endpoints::consensus::ConsensusSettings::default()
    );

    let on = format!(
        "{}\nleader_election: {{enabled: true}}\nconsensus: {{enabled: true, quorum: 2, heartbeat: 2000}}\n",
        seed()
    );
    let c = load(&on).unwrap().config;
    assert!(c.consensus.enabled);
    let s = &c.consensus.settings;
    assert_eq!(s.quorum, Some(2));
    assert_eq!(s.heartbeat, Duration::from_secs(2));
    assert_eq!(
        s.ttl,
        Duration::from_secs(6),
        "ttl defaults to three heartbeats"
    );
    assert_eq!(s.read_interval, Duration::from_secs(1));

    let alone = errors(&format!("{}\nconsensus: {{enabled: true}}\n", seed()));
    assert!(
        alone
            .iter()
            .any(|d| d.key == "consensus.enabled" && d.message.contains("leader_election.enabled")),
        "{alone:?}"
    );
    let short = errors(&format!(
        "{}\nleader_election: {{enabled: true}}\nconsensus: {{enabled: true, heartbeat: 5000, ttl: 5500}}\n",
        seed()
    ));
    assert!(
        short
            .iter()
            .any(|d| d.key == "consensus" && d.message.contains("consensus.ttl (5500 ms)")),
        "{short:?}"
    );
    let zero = errors(&format!("{}\nconsensus: {{quorum: 0}}\n", seed()));
    assert!(zero.iter().any(|d| d.key == "consensus.quorum"), "{zero:?}");
    let typo = load(&format!("{}\nconsensus: {{enable: true}}\n", seed()));
    let text = match typo {
        Err(e) => e.to_string(),
        Ok(l) => format!("{:?}", l.warnings),
    };
    assert!(text.contains("enable"), "{text}");
}
