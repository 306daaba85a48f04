//! `StateStore` for `EtcdStore`: the etcd calls behind each method.

use async_trait::async_trait;
use etcd_client::{GetOptions, SortOrder, SortTarget, Txn, TxnOp};

use super::{EtcdStore, text};
use crate::error::Result;
use crate::record::{decode, encode, target_records};
use crate::{AppliedRecord, StateStore, TargetRecord, TransitionEvent};

/// Events read per page when filtering them by service.
const EVENTS_PAGE: i64 = 500;
/// Operations per transaction: etcd's default `--max-txn-ops` is 128.
const TXN_OPS: usize = 120;

#[async_trait]
impl StateStore for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    async fn ping(&self) -> Result<()> {
        let key = self.services_prefix();
        let one = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        self.call("Range", &key, |mut c| {
            let k = key.clone();
            async move { c.get(k, Some(one)).await }
        })
        .await
        .map(drop)
    }

    async fn services(&self) -> Result<Vec<String>> {
        let prefix = self.services_prefix();
        let keys = GetOptions::new().with_prefix().with_keys_only();
        let reply = self
            .call("Range", &prefix, |mut c| {
                let k = prefix.clone();
                async move { c.get(k, Some(keys)).await }
            })
            .await?;
        let mut services: Vec<String> = reply
            .kvs()
            .iter()
            .filter_map(|kv| text(kv.key())?.strip_prefix(&prefix).map(str::to_owned))
            .filter(|s| !s.is_empty())
            .collect();
        services.sort();
        Ok(services)
    }

    async fn load_targets(&self, service: &str) -> Result<Vec<TargetRecord>> {
        let prefix = self.targets_prefix(service);
        let reply = self
            .call("Range", &prefix, |mut c| {
                let k = prefix.clone();
                async move { c.get(k, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(target_records(
            service,
            reply.kvs().iter().map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    text(kv.value()).map(str::to_owned),
                )
            }),
        ))
    }

    async fn save_target(&self, service: &str, record: &TargetRecord) -> Result<()> {
        self.save_targets(service, std::slice::from_ref(record))
            .await
    }

    async fn save_targets(&self, service: &str, records: &[TargetRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let prefix = self.targets_prefix(service);
        let mut puts = records
            .iter()
            .map(|r| {
                Ok(TxnOp::put(
                    format!("{prefix}{}", r.name),
                    encode(r, "target")?,
                    None,
                ))
            })
            .collect::<Result<Vec<TxnOp>>>()?;
        puts.push(self.service_index(service));
        // One transaction per chunk: a service with more targets than etcd takes operations in
        // one transaction is written in several.
        for chunk in puts.chunks(TXN_OPS) {
            let txn = Txn::new().and_then(chunk.to_vec());
            self.call("Txn", &prefix, |mut c| async move { c.txn(txn).await })
                .await?;
        }
        Ok(())
    }

    async fn remove_target(&self, service: &str, name: &str) -> Result<bool> {
        let key = format!("{}{name}", self.targets_prefix(service));
        let reply = self
            .call("DeleteRange", &key, |mut c| {
                let k = key.clone();
                async move { c.delete(k, None).await }
            })
            .await?;
        Ok(reply.deleted() > 0)
    }

    async fn load_applied(&self, service: &str) -> Result<Option<AppliedRecord>> {
        let key = self.applied_key(service);
        let reply = self
            .call("Range", &key, |mut c| {
                let k = key.clone();
                async move { c.get(k, None).await }
            })
            .await?;
        Ok(reply
            .kvs()
            .first()
            .and_then(|kv| decode(text(kv.value())?, &key)))
    }

    async fn save_applied(&self, service: &str, record: &AppliedRecord) -> Result<()> {
        let key = self.applied_key(service);
        let txn = Txn::new().and_then(vec![
            TxnOp::put(key.clone(), encode(record, "applied")?, None),
            self.service_index(service),
        ]);
        self.call("Txn", &key, |mut c| async move { c.txn(txn).await })
            .await
            .map(drop)
    }

    async fn append_event(&self, event: &TransitionEvent) -> Result<()> {
        let json = encode(event, "event")?;
        let prefix = self.events_prefix();
        // Unique without coordination; reads order by creation revision, not by name.
        let key = format!("{prefix}{:016}-{:016x}", event.at, rand::random::<u64>());
        self.call("Put", &key, |mut c| {
            let k = key.clone();
            async move { c.put(k, json, None).await }
        })
        .await?;
        self.trim_events().await
    }

    async fn recent_events<'a>(
        &self,
        service: Option<&'a str>,
        limit: usize,
    ) -> Result<Vec<TransitionEvent>> {
        let prefix = self.events_prefix();
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        let page = match service {
            Some(_) => EVENTS_PAGE,
            None => i64::try_from(limit).unwrap_or(i64::MAX).min(EVENTS_PAGE),
        };
        // Newest first, paging back by creation revision.
        let mut below: Option<i64> = None;
        loop {
            let mut options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(page);
            if let Some(rev) = below {
                options = options.with_max_create_revision(rev - 1);
            }
            let reply = self
                .call("Range", &prefix, |mut c| {
                    let k = prefix.clone();
                    async move { c.get(k, Some(options)).await }
                })
                .await?;
            let kvs = reply.kvs();
            let exhausted = i64::try_from(kvs.len()).unwrap_or(i64::MAX) < page;
            for kv in kvs {
                below = Some(kv.create_revision());
                let key = String::from_utf8_lossy(kv.key());
                let Some(event) =
                    text(kv.value()).and_then(|raw| decode::<TransitionEvent>(raw, &key))
                else {
                    continue;
                };
                if service.is_some_and(|s| event.service != s) {
                    continue;
                }
                found.push(event);
                if found.len() == limit {
                    break;
                }
            }
            if exhausted || found.len() == limit || below.is_none_or(|rev| rev <= 1) {
                break;
            }
        }
        found.reverse();
        Ok(found)
    }
}

impl EtcdStore {
    fn service_index(&self, service: &str) -> TxnOp {
        TxnOp::put(format!("{}{service}", self.services_prefix()), "", None)
    }

    /// Deletes the oldest events beyond `events_max_len`.
    async fn trim_events(&self) -> Result<()> {
        let count = self.event_count().await?;
        let max = self.shared.events_max_len;
        if count <= max {
            return Ok(());
        }
        let prefix = self.events_prefix();
        let excess = i64::try_from(count - max).unwrap_or(i64::MAX);
        let oldest = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(excess);
        let reply = self
            .call("Range", &prefix, |mut c| {
                let k = prefix.clone();
                async move { c.get(k, Some(oldest)).await }
            })
            .await?;
        let deletes: Vec<TxnOp> = reply
            .kvs()
            .iter()
            .map(|kv| TxnOp::delete(kv.key().to_vec(), None))
            .collect();
        for chunk in deletes.chunks(TXN_OPS) {
            let txn = Txn::new().and_then(chunk.to_vec());
            self.call("Txn", &prefix, |mut c| async move { c.txn(txn).await })
                .await?;
        }
        Ok(())
    }
}
