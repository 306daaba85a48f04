//! The etcd store and lock against a real `etcd` that each test starts on free loopback ports
//! with a temporary data directory (`fixtures::etcd`). Without `etcd` on PATH these tests fail,
//! unless `EPCHECK_SKIP_ETCD_TESTS=1` is set. What every store promises is in
//! `tests/contract.rs`; this file covers what is etcd's own: keys, TLS, credentials, outages
//! and the lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connection;
mod lock;
mod store;
mod views;

use fixtures::etcd::EtcdServer;
use state_store::{EtcdOptions, Health, TargetRecord};

pub(crate) fn target(service: &str, name: &str, state: Health) -> TargetRecord {
    let mut record = TargetRecord::new(service, name, "198.51.100.10".parse().unwrap(), 38080);
    record.state = state;
    record
}

pub(crate) fn options(etcd: &EtcdServer) -> EtcdOptions {
    EtcdOptions::new([etcd.endpoint()])
}

/// A raw client, to look at and tamper with what the store wrote.
pub(crate) async fn raw(etcd: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap()
}

/// Every key under `prefix`, sorted.
pub(crate) async fn keys(etcd: &EtcdServer, prefix: &str) -> Vec<String> {
    let mut c = raw(etcd).await;
    let reply = c
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let mut keys: Vec<String> = reply
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}
