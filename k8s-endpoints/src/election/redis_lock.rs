//! A Redis key as the [`TtlLock`] of a [`TtlElector`](super::TtlElector) (feature `redis`).

use std::time::Duration;

use state_store::RedisLock;

use super::TtlLock;
use crate::Error;

/// [`RedisLock`] as a [`TtlLock`]: `SET NX PX` to take it, Lua compare-and-set scripts to
/// renew and release it, so only the holder does either. The key expires on Redis's clock, so
/// no two hosts' clocks are compared.
#[derive(Debug, Clone)]
pub struct RedisTtlLock(pub RedisLock);

impl RedisTtlLock {
    fn fail(&self, op: &str, e: state_store::Error) -> Error {
        Error::Lock {
            lock: self.describe(),
            problem: format!("{op} failed"),
            source: Some(Box::new(e)),
        }
    }
}

impl TtlLock for RedisTtlLock {
    async fn acquire(&self, identity: &str, ttl: Duration) -> Result<bool, Error> {
        let r = self.0.try_acquire(identity, ttl).await;
        r.map_err(|e| self.fail("SET NX", e))
    }

    async fn renew(&self, identity: &str, ttl: Duration) -> Result<bool, Error> {
        let r = self.0.renew(identity, ttl).await;
        r.map_err(|e| self.fail("renew", e))
    }

    async fn release(&self, identity: &str) -> Result<bool, Error> {
        let r = self.0.release(identity).await;
        r.map_err(|e| self.fail("release", e))
    }

    async fn holder(&self) -> Result<Option<String>, Error> {
        let r = self.0.holder().await;
        r.map_err(|e| self.fail("GET", e))
    }

    fn describe(&self) -> String {
        format!("Redis key {}", self.0.key())
    }
}
