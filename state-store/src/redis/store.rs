//! `StateStore` for `RedisStore`: the commands behind each method.

use std::collections::HashMap;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::Value;

use super::{RedisStore, text};
use crate::error::Result;
use crate::record::{decode, encode, target_records};
use crate::{AppliedRecord, StateStore, TargetRecord, TransitionEvent};

/// Entries read per `XREVRANGE` page when filtering events by service.
const EVENTS_PAGE: usize = 500;

#[async_trait]
impl StateStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<()> {
        self.run("PING", "-", |c| async move { c.ping::<String>(None).await })
            .await
            .map(drop)
    }

    async fn services(&self) -> Result<Vec<String>> {
        let key = self.services_key();
        let k = key.clone();
        let mut services: Vec<String> = self
            .run("SMEMBERS", &key, |c| async move { c.smembers(k).await })
            .await?;
        services.sort();
        Ok(services)
    }

    async fn load_targets(&self, service: &str) -> Result<Vec<TargetRecord>> {
        let key = self.targets_key(service);
        let k = key.clone();
        let fields: HashMap<String, Value> = self
            .run("HGETALL", &key, |c| async move { c.hgetall(k).await })
            .await?;
        Ok(target_records(
            service,
            fields
                .into_iter()
                .map(|(name, value)| (format!("{key} {name}"), text(value))),
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
        let fields = records
            .iter()
            .map(|r| Ok((r.name.clone(), encode(r, "target")?)))
            .collect::<Result<Vec<(String, String)>>>()?;
        let key = self.targets_key(service);
        let (k, services, svc) = (key.clone(), self.services_key(), service.to_owned());
        self.run("HSET", &key, |c| async move {
            let pipe = c.pipeline().with_options(c.options());
            let () = pipe.hset(k, fields).await?;
            let () = pipe.sadd(services, svc).await?;
            pipe.all::<Value>().await
        })
        .await
        .map(drop)
    }

    async fn remove_target(&self, service: &str, name: &str) -> Result<bool> {
        let key = self.targets_key(service);
        let (k, name) = (key.clone(), name.to_owned());
        let removed: i64 = self
            .run("HDEL", &key, |c| async move { c.hdel(k, name).await })
            .await?;
        Ok(removed > 0)
    }

    async fn load_applied(&self, service: &str) -> Result<Option<AppliedRecord>> {
        let key = self.applied_key(service);
        let k = key.clone();
        let raw: Option<String> = self
            .run("GET", &key, |c| async move { c.get(k).await })
            .await?;
        Ok(raw.and_then(|raw| decode(&raw, &key)))
    }

    async fn save_applied(&self, service: &str, record: &AppliedRecord) -> Result<()> {
        let json = encode(record, "applied")?;
        let key = self.applied_key(service);
        let (k, services, svc) = (key.clone(), self.services_key(), service.to_owned());
        self.run("SET", &key, |c| async move {
            let pipe = c.pipeline().with_options(c.options());
            let () = pipe.set(k, json, None, None, false).await?;
            let () = pipe.sadd(services, svc).await?;
            pipe.all::<Value>().await
        })
        .await
        .map(drop)
    }

    async fn append_event(&self, event: &TransitionEvent) -> Result<()> {
        let json = encode(event, "event")?;
        let key = self.events_key();
        let k = key.clone();
        let cap = i64::try_from(self.shared.events_max_len).unwrap_or(i64::MAX);
        let fields = vec![("svc", event.service.clone()), ("event", json)];
        self.run("XADD", &key, |c| async move {
            c.xadd::<Value, _, _, _, _>(k, false, ("MAXLEN", "~", cap), "*", fields)
                .await
        })
        .await
        .map(drop)
    }

    async fn recent_events<'a>(
        &self,
        service: Option<&'a str>,
        limit: usize,
    ) -> Result<Vec<TransitionEvent>> {
        let key = self.events_key();
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        let page = if service.is_some() {
            EVENTS_PAGE
        } else {
            limit.min(EVENTS_PAGE)
        };
        let mut end = "+".to_owned();
        loop {
            let (k, from) = (key.clone(), end.clone());
            let entries: Vec<(String, HashMap<String, String>)> = self
                .run("XREVRANGE", &key, |c| async move {
                    c.xrevrange_values(k, from, "-", Some(page as u64)).await
                })
                .await?;
            let exhausted = entries.len() < page;
            for (id, fields) in entries {
                end = format!("({id}");
                if service.is_some_and(|s| fields.get("svc").map(String::as_str) != Some(s)) {
                    continue;
                }
                let Some(raw) = fields.get("event") else {
                    tracing::warn!(key = %key, id = %id, "skipping an event entry without an event field");
                    continue;
                };
                if let Some(event) = decode::<TransitionEvent>(raw, &format!("{key} {id}")) {
                    found.push(event);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if exhausted || found.len() == limit {
                break;
            }
        }
        found.reverse();
        Ok(found)
    }
}
