//! Published views for multi-vantage consensus (SPEC §9.1) on etcd: one key per replica bound
//! to that replica's etcd lease, so it vanishes when the replica stops publishing, and one
//! plain key per replica that names it, so that a reader learns which views expired.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::lock::{keep_alive, lease_seconds};
use super::{EtcdStore, text};
use crate::error::Result;
use crate::views::{MAX_REPLICAS, PostedView};

/// The views of one consensus group: keys `<prefix>_views/<name>/view/<replica>` (bound to the
/// replica's lease, whose TTL is the view's) and `<prefix>_views/<name>/member/<replica>` (no
/// lease) naming the replicas that published.
///
/// Made by [`EtcdStore::views`]. Clones share the lease this process publishes with.
#[derive(Debug, Clone)]
pub struct EtcdViews {
    store: EtcdStore,
    name: String,
    /// This process's lease and the TTL it was granted with.
    lease: Arc<Mutex<Option<(i64, i64)>>>,
}

impl EtcdViews {
    pub(super) fn new(store: EtcdStore, name: &str) -> Self {
        EtcdViews {
            store,
            name: name.to_owned(),
            lease: Arc::new(Mutex::new(None)),
        }
    }

    /// The prefix every key of this group starts with.
    pub fn prefix(&self) -> String {
        self.base()
    }

    fn base(&self) -> String {
        format!("{}_views/{}/", self.store.key_prefix(), self.name)
    }

    fn view_key(&self, replica: &str) -> String {
        format!("{}view/{replica}", self.base())
    }

    fn member_key(&self, replica: &str) -> String {
        format!("{}member/{replica}", self.base())
    }

    fn held(&self) -> Option<(i64, i64)> {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_held(&self, lease: Option<(i64, i64)>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    /// A live lease of `seconds` for this replica's view: the one it has, kept alive, or a new
    /// one.
    async fn live_lease(&self, seconds: i64) -> Result<i64> {
        if let Some((lease, granted)) = self.held()
            && granted == seconds
            && keep_alive(&self.store, &self.base(), lease).await?
        {
            return Ok(lease);
        }
        let key = self.base();
        let lease = self
            .store
            .call("LeaseGrant", &key, |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?
            .id();
        self.set_held(Some((lease, seconds)));
        Ok(lease)
    }

    /// Publishes `replica`'s view `text`, expiring `ttl` (rounded up to whole seconds) from now
    /// on etcd's clock.
    ///
    /// # Errors
    ///
    /// [`Error::EtcdOption`](crate::Error::EtcdOption) for a zero TTL; the store's errors when
    /// etcd does not answer.
    pub async fn publish(&self, replica: &str, text: &str, ttl: Duration) -> Result<()> {
        let seconds = lease_seconds(ttl)?;
        let lease = self.live_lease(seconds).await?;
        let view = self.view_key(replica);
        let txn = Txn::new().and_then(vec![
            TxnOp::put(
                view.clone(),
                text,
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(self.member_key(replica), "", None),
        ]);
        let put = self
            .store
            .call("Txn", &view, |mut c| async move { c.txn(txn).await })
            .await;
        if put.is_err() {
            // Perhaps the lease expired between the keep-alive and the put: take a new one
            // next time.
            self.set_held(None);
        }
        put.map(drop)
    }

    /// Every replica that published (at most [`MAX_REPLICAS`], sorted) with its view, if it
    /// has not expired.
    ///
    /// # Errors
    ///
    /// The store's errors when etcd does not answer.
    pub async fn read(&self) -> Result<Vec<PostedView>> {
        let base = self.base();
        // One read at one revision: members and views agree.
        let reply = self
            .store
            .call("Range", &base, |mut c| {
                let k = base.clone();
                async move { c.get(k, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let (mut members, mut views) = (Vec::new(), std::collections::HashMap::new());
        for kv in reply.kvs() {
            let Some(key) = text(kv.key()).and_then(|k| k.strip_prefix(&base)) else {
                continue;
            };
            if let Some(replica) = key.strip_prefix("member/") {
                members.push(replica.to_owned());
            } else if let Some(replica) = key.strip_prefix("view/") {
                views.insert(
                    replica.to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                );
            }
        }
        members.sort();
        members.truncate(MAX_REPLICAS);
        Ok(members
            .into_iter()
            .map(|replica| PostedView {
                text: views.remove(&replica),
                replica,
            })
            .collect())
    }

    /// Removes `replica`'s view and its name (a clean shutdown), and revokes this process's
    /// lease.
    ///
    /// # Errors
    ///
    /// The store's errors when etcd does not answer.
    pub async fn withdraw(&self, replica: &str) -> Result<()> {
        let view = self.view_key(replica);
        let txn = Txn::new().and_then(vec![
            TxnOp::delete(view.clone(), None),
            TxnOp::delete(self.member_key(replica), None),
        ]);
        self.store
            .call("Txn", &view, |mut c| async move { c.txn(txn).await })
            .await?;
        if let Some((lease, _)) = self.held() {
            self.set_held(None);
            let _ = self
                .store
                .call("LeaseRevoke", &view, |mut c| async move {
                    c.lease_revoke(lease).await
                })
                .await;
        }
        Ok(())
    }

    /// Drops `replica`'s name if its view has expired; `Ok(true)` when it was dropped.
    ///
    /// # Errors
    ///
    /// The store's errors when etcd does not answer.
    pub async fn forget(&self, replica: &str) -> Result<bool> {
        let member = self.member_key(replica);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                self.view_key(replica),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::delete(member.clone(), None)]);
        let reply = self
            .store
            .call("Txn", &member, |mut c| async move { c.txn(txn).await })
            .await?;
        let dropped = reply
            .op_responses()
            .iter()
            .any(|r| matches!(r, TxnOpResponse::Delete(d) if d.deleted() > 0));
        Ok(reply.succeeded() && dropped)
    }
}
