//! The Redis store and lock against a real `redis-server` that each test starts on its own free
//! loopback port (`--save '' --appendonly no`). Without `redis-server` on PATH these tests fail,
//! unless `EPCHECK_SKIP_REDIS_TESTS=1` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connection;
mod lock;
mod server;
mod store;
mod views;

use state_store::{Health, SCHEMA_VERSION, TargetRecord, TransitionEvent};

pub(crate) fn target(service: &str, name: &str, state: Health) -> TargetRecord {
    let mut record = TargetRecord::new(service, name, "198.51.100.10".parse().unwrap(), 38080);
    record.state = state;
    record
}

pub(crate) fn event(service: &str, n: u64) -> TransitionEvent {
    TransitionEvent {
        schema: SCHEMA_VERSION,
        service: service.into(),
        target: format!("node-{n}"),
        ip: "198.51.100.11".parse().unwrap(),
        from: Health::Up,
        to: Health::Down,
        at: n,
        error: Some("connection refused".into()),
    }
}

pub(crate) fn ats(events: &[TransitionEvent]) -> Vec<u64> {
    events.iter().map(|e| e.at).collect()
}
