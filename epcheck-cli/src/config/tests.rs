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
