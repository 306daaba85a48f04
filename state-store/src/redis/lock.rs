//! The leader lock on Redis (SPEC §9, `leader_election.backend: redis`).

use std::time::Duration;

use fred::prelude::*;

use super::RedisStore;
use crate::error::{Error, Result};

/// Takes the lock when it is free (`SET NX PX`), or extends it when `identity` already holds
/// it, so that a retried acquire after a lost reply is not mistaken for a refusal.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Extends the lock only if `identity` holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lock only if `identity` holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A lock key held by one identity for a time-to-live, for leader election on Redis.
///
/// Only the holder can renew or release it (compare-and-set in Lua); when the holder stops
/// renewing, the key expires on Redis's clock and another identity can take it, so no two
/// hosts' clocks are ever compared. The caller keeps the §9 rule: renew well before the TTL
/// runs out (`renew_deadline < ttl`) and stop writing at once when a renewal has not succeeded
/// within `renew_deadline` — a renewal that fails because Redis is unreachable returns an
/// error, which means "not confirmed", never "still leader".
///
/// Made by [`RedisStore::lock`]; the key is `<prefix>lock:<name>`.
#[derive(Debug, Clone)]
pub struct RedisLock {
    store: RedisStore,
    key: String,
}

impl RedisLock {
    pub(super) fn new(store: RedisStore, key: String) -> Self {
        RedisLock { store, key }
    }

    /// The Redis key of the lock.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes the lock for `ttl` if nobody holds it; `Ok(true)` when `identity` holds it now
    /// (also when it already held it: the TTL is then extended).
    pub async fn try_acquire(&self, identity: &str, ttl: Duration) -> Result<bool> {
        self.script("EVAL acquire", ACQUIRE, identity, Some(ttl))
            .await
    }

    /// Extends the lock to `ttl` from now; `Ok(false)` when `identity` does not hold it (it
    /// expired, or someone else took it).
    pub async fn renew(&self, identity: &str, ttl: Duration) -> Result<bool> {
        self.script("EVAL renew", RENEW, identity, Some(ttl)).await
    }

    /// Frees the lock so another replica can take over at once; `Ok(false)` when `identity`
    /// did not hold it.
    pub async fn release(&self, identity: &str) -> Result<bool> {
        self.script("EVAL release", RELEASE, identity, None).await
    }

    /// Who holds the lock, if anyone.
    pub async fn holder(&self) -> Result<Option<String>> {
        let key = self.key.clone();
        self.store
            .run("GET", &self.key, |c| async move { c.get(key).await })
            .await
    }

    /// How long the lock has left, if it is held.
    pub async fn remaining(&self) -> Result<Option<Duration>> {
        let key = self.key.clone();
        let ms: i64 = self
            .store
            .run("PTTL", &self.key, |c| async move { c.pttl(key).await })
            .await?;
        Ok(u64::try_from(ms).ok().map(Duration::from_millis))
    }

    async fn script(
        &self,
        op: &'static str,
        lua: &'static str,
        identity: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let mut args = vec![identity.to_owned()];
        if let Some(ttl) = ttl {
            let ms = ttl.as_millis();
            if ms == 0 || ms > i64::MAX as u128 {
                return Err(Error::InvalidOption {
                    option: "ttl",
                    reason: format!("{ttl:?} must be at least 1 ms"),
                });
            }
            args.push(ms.to_string());
        }
        let key = self.key.clone();
        let done: i64 = self
            .store
            .run(
                op,
                &self.key,
                |c| async move { c.eval(lua, key, args).await },
            )
            .await?;
        Ok(done == 1)
    }
}
