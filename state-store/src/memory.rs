//! The in-memory store, epcheck's default.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, RwLock};

use crate::{AppliedRecord, Result, StateStore, TargetRecord, TransitionEvent};

/// How many transition events [`MemoryStore::new`] keeps.
pub const DEFAULT_EVENT_CAPACITY: usize = 1000;

/// A store in the process's memory: nothing to run, nothing survives a restart.
///
/// Cloning is cheap and every clone sees the same data, so a test can hand one clone to the
/// daemon and inspect another.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    services: RwLock<BTreeMap<String, ServiceState>>,
    events: Mutex<VecDeque<TransitionEvent>>,
    event_capacity: usize,
}

#[derive(Debug, Default)]
struct ServiceState {
    targets: BTreeMap<String, TargetRecord>,
    applied: Option<AppliedRecord>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store keeping the last [`DEFAULT_EVENT_CAPACITY`] events.
    pub fn new() -> Self {
        MemoryStore::with_event_capacity(DEFAULT_EVENT_CAPACITY)
    }

    /// An empty store keeping the last `capacity` events (0 keeps none).
    pub fn with_event_capacity(capacity: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                services: RwLock::new(BTreeMap::new()),
                events: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
                event_capacity: capacity,
            }),
        }
    }

    /// How many events the store keeps at most.
    pub fn event_capacity(&self) -> usize {
        self.inner.event_capacity
    }

    /// How many events the store holds now.
    pub async fn event_count(&self) -> usize {
        self.inner.events.lock().await.len()
    }

    fn stamped(service: &str, record: &TargetRecord) -> TargetRecord {
        let mut record = record.clone();
        if record.service.is_empty() {
            record.service = service.to_owned();
        }
        record
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn services(&self) -> Result<Vec<String>> {
        Ok(self.inner.services.read().await.keys().cloned().collect())
    }

    async fn load_targets(&self, service: &str) -> Result<Vec<TargetRecord>> {
        let services = self.inner.services.read().await;
        Ok(services
            .get(service)
            .map(|s| s.targets.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn save_target(&self, service: &str, record: &TargetRecord) -> Result<()> {
        let mut services = self.inner.services.write().await;
        let state = services.entry(service.to_owned()).or_default();
        state
            .targets
            .insert(record.name.clone(), Self::stamped(service, record));
        Ok(())
    }

    async fn save_targets(&self, service: &str, records: &[TargetRecord]) -> Result<()> {
        let mut services = self.inner.services.write().await;
        let state = services.entry(service.to_owned()).or_default();
        for record in records {
            state
                .targets
                .insert(record.name.clone(), Self::stamped(service, record));
        }
        Ok(())
    }

    async fn remove_target(&self, service: &str, name: &str) -> Result<bool> {
        let mut services = self.inner.services.write().await;
        Ok(services
            .get_mut(service)
            .is_some_and(|s| s.targets.remove(name).is_some()))
    }

    async fn load_applied(&self, service: &str) -> Result<Option<AppliedRecord>> {
        let services = self.inner.services.read().await;
        Ok(services.get(service).and_then(|s| s.applied.clone()))
    }

    async fn save_applied(&self, service: &str, record: &AppliedRecord) -> Result<()> {
        let mut services = self.inner.services.write().await;
        services.entry(service.to_owned()).or_default().applied = Some(record.clone());
        Ok(())
    }

    async fn append_event(&self, event: &TransitionEvent) -> Result<()> {
        if self.inner.event_capacity == 0 {
            return Ok(());
        }
        let mut events = self.inner.events.lock().await;
        while events.len() >= self.inner.event_capacity {
            events.pop_front();
        }
        events.push_back(event.clone());
        Ok(())
    }

    async fn recent_events<'a>(
        &self,
        service: Option<&'a str>,
        limit: usize,
    ) -> Result<Vec<TransitionEvent>> {
        let events = self.inner.events.lock().await;
        let mut recent: Vec<TransitionEvent> = events
            .iter()
            .rev()
            .filter(|e| service.is_none_or(|s| e.service == s))
            .take(limit)
            .cloned()
            .collect();
        recent.reverse();
        Ok(recent)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{Health, SCHEMA_VERSION};

    fn event(service: &str, n: u64) -> TransitionEvent {
        TransitionEvent {
            schema: SCHEMA_VERSION,
            service: service.into(),
            target: format!("node-{n}"),
            ip: "198.51.100.10".parse().unwrap(),
            from: Health::Up,
            to: Health::Down,
            at: n,
            error: Some("refused".into()),
        }
    }

    #[tokio::test]
    async fn targets_round_trip_sorted_and_service_filled() {
        let store = MemoryStore::new();
        let ip = "198.51.100.10".parse().unwrap();
        let mut b = TargetRecord::new("", "b", ip, 80);
        b.state = Health::Down;
        let a = TargetRecord::new("redis", "a", ip, 80);
        store
            .save_targets("redis", &[b.clone(), a.clone()])
            .await
            .unwrap();
        let loaded = store.load_targets("redis").await.unwrap();
        assert_eq!(
            loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            loaded[1].service, "redis",
            "an empty service is filled from the key"
        );
        assert_eq!(loaded[1].state, Health::Down);

        // Replace, then remove.
        b.state = Health::Up;
        store.save_target("redis", &b).await.unwrap();
        assert_eq!(
            store.load_targets("redis").await.unwrap()[1].state,
            Health::Up
        );
        assert!(store.remove_target("redis", "b").await.unwrap());
        assert!(!store.remove_target("redis", "b").await.unwrap());
        assert!(!store.remove_target("other", "b").await.unwrap());
        assert!(store.load_targets("other").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn applied_and_services() {
        let store = MemoryStore::default();
        assert_eq!(store.kind(), "memory");
        store.ping().await.unwrap();
        assert_eq!(store.load_applied("redis").await.unwrap(), None);
        let applied = AppliedRecord {
            schema: SCHEMA_VERSION,
            ready: vec!["198.51.100.10".into()],
            not_ready: vec![],
            resource_version: Some("7".into()),
            applied_at: 1,
        };
        store.save_applied("redis", &applied).await.unwrap();
        let t = TargetRecord::new("emqx", "n", "198.51.100.11".parse().unwrap(), 1883);
        store.save_target("emqx", &t).await.unwrap();
        assert_eq!(store.load_applied("redis").await.unwrap(), Some(applied));
        assert_eq!(store.services().await.unwrap(), ["emqx", "redis"]);
    }

    #[tokio::test]
    async fn events_are_capped_ordered_and_filtered() {
        let store = MemoryStore::with_event_capacity(5);
        let inspector = store.clone();
        for n in 0..8 {
            let service = if n % 2 == 0 { "even" } else { "odd" };
            store.append_event(&event(service, n)).await.unwrap();
        }
        assert_eq!(inspector.event_count().await, 5);
        assert_eq!(inspector.event_capacity(), 5);

        let all = store.recent_events(None, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.at).collect::<Vec<_>>(),
            [3, 4, 5, 6, 7]
        );
        let last_two = store.recent_events(None, 2).await.unwrap();
        assert_eq!(last_two.iter().map(|e| e.at).collect::<Vec<_>>(), [6, 7]);
        let odd = store.recent_events(Some("odd"), 100).await.unwrap();
        assert_eq!(odd.iter().map(|e| e.at).collect::<Vec<_>>(), [3, 5, 7]);
        let even = store.recent_events(Some("even"), 1).await.unwrap();
        assert_eq!(even.iter().map(|e| e.at).collect::<Vec<_>>(), [6]);
        assert!(
            store
                .recent_events(Some("none"), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.recent_events(None, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn zero_capacity_keeps_no_events() {
        let store = MemoryStore::with_event_capacity(0);
        store.append_event(&event("s", 1)).await.unwrap();
        assert!(store.recent_events(None, 10).await.unwrap().is_empty());
    }
}
