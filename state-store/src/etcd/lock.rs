//! The leader lock on etcd (SPEC §9, `leader_election.backend: etcd`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::{EtcdStore, text};
use crate::error::{Error, Result};

/// A key bound to an etcd lease, held by one identity, for leader election on etcd.
///
/// - **Take:** when the key is absent, grant a lease of `ttl` (rounded up to whole seconds,
///   etcd's unit) and create the key with it in a transaction that succeeds only if the key
///   still does not exist (`create_revision == 0`); a lost race revokes the unused lease.
/// - **Renew:** one keep-alive on the lease, then a read that the key still names this
///   identity on this lease. Only the holder knows the lease, so only it can renew.
/// - **Release:** delete the key if it names this identity, and revoke the lease.
///
/// The lease expires on etcd's clock when the holder stops keeping it alive, and the key goes
/// with it, so no two hosts' clocks are compared. The caller keeps the §9 rule: renew well
/// before the TTL runs out and stop writing once a renewal has not succeeded within
/// `renew_deadline < ttl`; every error means "not confirmed", never "still held".
///
/// Made by [`EtcdStore::lock`]; the key is `<prefix>_lock/<name>`. Clones share the lease this
/// process holds.
#[derive(Debug, Clone)]
pub struct EtcdLock {
    store: EtcdStore,
    key: String,
    /// The lease this process holds the key with, if it does.
    lease: Arc<Mutex<Option<i64>>>,
}

impl EtcdLock {
    pub(super) fn new(store: EtcdStore, key: String) -> Self {
        EtcdLock {
            store,
            key,
            lease: Arc::new(Mutex::new(None)),
        }
    }

    /// The etcd key of the lock.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn held(&self) -> Option<i64> {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_held(&self, lease: Option<i64>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    /// The key's holder and lease, if it exists.
    async fn read(&self) -> Result<Option<(String, i64)>> {
        let key = self.key.clone();
        let reply = self
            .store
            .call(
                "Range",
                &self.key,
                |mut c| async move { c.get(key, None).await },
            )
            .await?;
        Ok(reply
            .kvs()
            .first()
            .map(|kv| (text(kv.value()).unwrap_or_default().to_owned(), kv.lease())))
    }

    /// Takes the lock for `ttl` if nobody holds it; `Ok(true)` when `identity` holds it now
    /// (also when it already held it, say after a lost reply: the lease is then kept alive).
    pub async fn try_acquire(&self, identity: &str, ttl: Duration) -> Result<bool> {
        let seconds = lease_seconds(ttl)?;
        match self.read().await? {
            Some((holder, lease)) if holder == identity => {
                let alive = keep_alive(&self.store, &self.key, lease).await?;
                self.set_held(alive.then_some(lease));
                return Ok(alive);
            }
            Some(_) => return Ok(false),
            None => {}
        }
        let lease = self
            .store
            .call("LeaseGrant", &self.key, |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?
            .id();
        let (key, value) = (self.key.clone(), identity.to_owned());
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let created = self
            .store
            .call("Txn", &self.key, |mut c| async move { c.txn(txn).await })
            .await;
        match created {
            Ok(reply) if reply.succeeded() => {
                self.set_held(Some(lease));
                Ok(true)
            }
            other => {
                // Lost the race (or the answer): the lease holds nothing of ours.
                self.revoke(lease).await;
                other.map(|_| false)
            }
        }
    }

    /// Keeps the lease alive and checks the key still names `identity` on it; `Ok(false)` when
    /// `identity` no longer holds the lock (the lease expired, or the key was deleted).
    pub async fn renew(&self, identity: &str, ttl: Duration) -> Result<bool> {
        lease_seconds(ttl)?;
        let Some(lease) = self.held() else {
            return Ok(false);
        };
        if !keep_alive(&self.store, &self.key, lease).await? {
            self.set_held(None);
            return Ok(false);
        }
        let ours = self
            .read()
            .await?
            .is_some_and(|(holder, on)| holder == identity && on == lease);
        if !ours {
            self.set_held(None);
        }
        Ok(ours)
    }

    /// Frees the lock so another replica can take over at once: deletes the key if it names
    /// `identity` and revokes this process's lease. `Ok(false)` when `identity` did not hold
    /// it.
    pub async fn release(&self, identity: &str) -> Result<bool> {
        let key = self.key.clone();
        let txn = Txn::new()
            .when(vec![Compare::value(
                key.clone(),
                CompareOp::Equal,
                identity,
            )])
            .and_then(vec![TxnOp::delete(key, None)]);
        let deleted = self
            .store
            .call("Txn", &self.key, |mut c| async move { c.txn(txn).await })
            .await
            .map(|r| r.succeeded());
        if let Some(lease) = self.held() {
            self.revoke(lease).await;
            self.set_held(None);
        }
        deleted
    }

    /// Who holds the lock, if anyone.
    pub async fn holder(&self) -> Result<Option<String>> {
        Ok(self.read().await?.map(|(holder, _)| holder))
    }

    /// How long the lease this process holds has left, if it holds one that lives.
    pub async fn remaining(&self) -> Result<Option<Duration>> {
        let Some(lease) = self.held() else {
            return Ok(None);
        };
        let reply = self
            .store
            .call("LeaseTimeToLive", &self.key, |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok(u64::try_from(reply.ttl())
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs))
    }

    /// Revokes a lease, best effort (it expires by itself otherwise).
    async fn revoke(&self, lease: i64) {
        let revoked = self
            .store
            .call("LeaseRevoke", &self.key, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        if let Err(e) = revoked {
            tracing::debug!(key = %self.key, error = %e, "could not revoke an etcd lease; it expires by itself");
        }
    }
}

/// One keep-alive round trip on `lease` (for messages: `key`); whether the lease still lives.
pub(super) async fn keep_alive(store: &EtcdStore, key: &str, lease: i64) -> Result<bool> {
    let reply = store
        .call("LeaseKeepAlive", key, |mut c| async move {
            let once = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            };
            match once.await {
                // An expired or revoked lease: an answer, not a failure.
                Err(e) if lease_gone(&e) => Ok(None),
                other => other,
            }
        })
        .await?;
    Ok(reply.is_some_and(|r| r.ttl() > 0))
}

/// Whether etcd said the lease does not exist (expired or revoked).
fn lease_gone(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        _ => false,
    }
}

/// `ttl` in etcd's unit, whole seconds, rounded up so the key never lives shorter than asked.
pub(super) fn lease_seconds(ttl: Duration) -> Result<i64> {
    if ttl.is_zero() {
        return Err(Error::EtcdOption {
            option: "ttl",
            reason: format!("{ttl:?} must be more than 0"),
        });
    }
    let seconds = ttl.as_millis().div_ceil(1000);
    i64::try_from(seconds).map_err(|_| Error::EtcdOption {
        option: "ttl",
        reason: format!("{ttl:?} is too long"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_seconds(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(lease_seconds(Duration::from_millis(2000)).unwrap(), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2001)).unwrap(), 3);
        assert!(lease_seconds(Duration::ZERO).is_err());
    }
}
