//! Published views for multi-vantage consensus (SPEC §9.1) on Redis: one key per replica with a
//! time-to-live kept by Redis, and one set that names the replicas, so that a reader finds the
//! views without `SCAN` and learns which ones expired.

use std::time::Duration;

use fred::prelude::*;

use super::RedisStore;
use crate::error::{Error, Result};
use crate::views::{MAX_REPLICAS, PostedView};

/// Sets the view with its TTL and registers the replica, in one step.
const PUBLISH: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
";

/// Drops a replica from the set only if its view is still gone (it may have come back).
const FORGET: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
";

/// The views of one consensus group: keys `<prefix>view:<name>:<replica>` (each with the TTL
/// its replica gave it) and the set `<prefix>views:<name>` of the replicas that published.
///
/// Made by [`RedisStore::views`].
#[derive(Debug, Clone)]
pub struct RedisViews {
    store: RedisStore,
    name: String,
}

impl RedisViews {
    pub(super) fn new(store: RedisStore, name: &str) -> Self {
        RedisViews {
            store,
            name: name.to_owned(),
        }
    }

    fn key(&self, replica: &str) -> String {
        format!("{}view:{}:{replica}", self.store.key_prefix(), self.name)
    }

    /// The set naming the replicas.
    pub fn set_key(&self) -> String {
        format!("{}views:{}", self.store.key_prefix(), self.name)
    }

    /// Publishes `replica`'s view `text`, expiring `ttl` from now on Redis's clock.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a zero TTL; the store's errors when Redis does not answer.
    pub async fn publish(&self, replica: &str, text: &str, ttl: Duration) -> Result<()> {
        let ms = ttl.as_millis();
        if ms == 0 || ms > i64::MAX as u128 {
            return Err(Error::InvalidOption {
                option: "ttl",
                reason: format!("{ttl:?} must be at least 1 ms"),
            });
        }
        let keys = vec![self.key(replica), self.set_key()];
        let args = vec![text.to_owned(), ms.to_string(), replica.to_owned()];
        let shown = self.key(replica);
        let _: i64 = self
            .store
            .run("EVAL publish view", &shown, |c| async move {
                c.eval(PUBLISH, keys, args).await
            })
            .await?;
        Ok(())
    }

    /// Every replica in the set (at most [`MAX_REPLICAS`], sorted) with its view, if any.
    ///
    /// # Errors
    ///
    /// The store's errors when Redis does not answer.
    pub async fn read(&self) -> Result<Vec<PostedView>> {
        let set = self.set_key();
        let shown = set.clone();
        let mut replicas: Vec<String> = self
            .store
            .run("SMEMBERS", &shown, |c| async move { c.smembers(set).await })
            .await?;
        replicas.sort();
        replicas.truncate(MAX_REPLICAS);
        if replicas.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = replicas.iter().map(|r| self.key(r)).collect();
        let texts: Vec<Option<String>> = if keys.len() == 1 {
            let key = keys[0].clone();
            vec![
                self.store
                    .run("GET", &keys[0], |c| async move { c.get(key).await })
                    .await?,
            ]
        } else {
            let shown = keys[0].clone();
            self.store
                .run("MGET", &shown, |c| async move { c.mget(keys).await })
                .await?
        };
        Ok(replicas
            .into_iter()
            .zip(texts)
            .map(|(replica, text)| PostedView { replica, text })
            .collect())
    }

    /// Removes `replica`'s view and its name (a clean shutdown).
    ///
    /// # Errors
    ///
    /// The store's errors when Redis does not answer.
    pub async fn withdraw(&self, replica: &str) -> Result<()> {
        let key = self.key(replica);
        let shown = key.clone();
        let _: i64 = self
            .store
            .run("DEL", &shown, |c| async move { c.del(key).await })
            .await?;
        self.forget(replica).await.map(|_| ())
    }

    /// Drops `replica` from the set if its view has expired; `Ok(true)` when it was dropped.
    ///
    /// # Errors
    ///
    /// The store's errors when Redis does not answer.
    pub async fn forget(&self, replica: &str) -> Result<bool> {
        let keys = vec![self.key(replica), self.set_key()];
        let args = vec![replica.to_owned()];
        let shown = self.set_key();
        let n: i64 = self
            .store
            .run("EVAL forget view", &shown, |c| async move {
                c.eval(FORGET, keys, args).await
            })
            .await?;
        Ok(n == 1)
    }
}
