//! An etcd key bound to an etcd lease as the [`TtlLock`] of a [`TtlElector`](super::TtlElector)
//! (feature `etcd`).

use std::time::Duration;

use state_store::EtcdLock;

use super::TtlLock;
use crate::Error;

/// [`EtcdLock`] as a [`TtlLock`]: a lease granted for `lease_duration` (whole seconds, rounded
/// up), the key created with it in a transaction only if absent, kept alive by its holder and
/// revoked on release. The lease expires on etcd's clock, so no two hosts' clocks are compared.
#[derive(Debug, Clone)]
pub struct EtcdTtlLock(pub EtcdLock);

impl EtcdTtlLock {
    fn fail(&self, op: &str, e: state_store::Error) -> Error {
        Error::Lock {
            lock: self.describe(),
            problem: format!("{op} failed"),
            source: Some(Box::new(e)),
        }
    }
}

impl TtlLock for EtcdTtlLock {
    async fn acquire(&self, identity: &str, ttl: Duration) -> Result<bool, Error> {
        let r = self.0.try_acquire(identity, ttl).await;
        r.map_err(|e| self.fail("create", e))
    }

    async fn renew(&self, identity: &str, ttl: Duration) -> Result<bool, Error> {
        let r = self.0.renew(identity, ttl).await;
        r.map_err(|e| self.fail("keep-alive", e))
    }

    async fn release(&self, identity: &str) -> Result<bool, Error> {
        let r = self.0.release(identity).await;
        r.map_err(|e| self.fail("release", e))
    }

    async fn holder(&self) -> Result<Option<String>, Error> {
        let r = self.0.holder().await;
        r.map_err(|e| self.fail("read", e))
    }

    fn describe(&self) -> String {
        format!("etcd key {}", self.0.key())
    }
}
