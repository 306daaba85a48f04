//! One suite, three backends: what every [`StateStore`] promises, run against the memory store,
//! a real `redis-server` and a real `etcd` (each started by the test on free loopback ports).
//!
//! A backend's own behaviour (connection loss, TLS, credentials, its key layout) is tested in
//! its own file; what a caller may rely on whatever the backend is tested here, once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use fixtures::etcd::EtcdServer;
use fixtures::redis::RedisServer;
use state_store::{
    AppliedRecord, EtcdOptions, EtcdStore, Health, MemoryStore, RedisOptions, RedisStore,
    SCHEMA_VERSION, StateStore, TargetRecord, TransitionEvent,
};

/// The events cap every backend is built with.
const CAP: usize = 50;

fn target(service: &str, name: &str, state: Health) -> TargetRecord {
    let mut record = TargetRecord::new(service, name, "198.51.100.10".parse().unwrap(), 38080);
    record.state = state;
    record
}

fn event(service: &str, n: u64) -> TransitionEvent {
    TransitionEvent {
        schema: SCHEMA_VERSION,
        service: service.into(),
        target: format!("node-{n}"),
        ip: "198.51.100.11".parse().unwrap(),
        from: Health::Up,
        to: Health::Down,
        at: n,
        error: Some("connection refused".into()),
    }
}

fn ats(events: &[TransitionEvent]) -> Vec<u64> {
    events.iter().map(|e| e.at).collect()
}

fn names(records: &[TargetRecord]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

/// Makes a fresh, empty store of one backend; each call gets its own key prefix, so stores
/// made by one factory do not see each other.
type Factory<'a> =
    &'a (dyn Fn(&str) -> futures::future::BoxFuture<'static, Arc<dyn StateStore>> + Sync);

async fn targets_applied_and_services_round_trip(make: Factory<'_>) {
    let store = make("round-trip").await;
    store.ping().await.unwrap();
    assert!(store.services().await.unwrap().is_empty());
    assert!(store.load_targets("redis").await.unwrap().is_empty());
    assert_eq!(store.load_applied("redis").await.unwrap(), None);

    let down = target("redis", "node-02", Health::Down);
    store.save_target("redis", &down).await.unwrap();
    store
        .save_targets(
            "redis",
            &[
                target("", "node-01", Health::Up),
                target("redis", "e1", Health::Up),
            ],
        )
        .await
        .unwrap();
    store.save_targets("redis", &[]).await.unwrap();
    let loaded = store.load_targets("redis").await.unwrap();
    assert_eq!(
        names(&loaded),
        ["e1", "node-01", "node-02"],
        "sorted by name"
    );
    assert_eq!(loaded[1].service, "redis", "an empty service is filled in");
    assert_eq!(loaded[2], down, "a record comes back as it was saved");

    // Saving again replaces, never duplicates.
    let up = target("redis", "node-02", Health::Up);
    store.save_target("redis", &up).await.unwrap();
    let loaded = store.load_targets("redis").await.unwrap();
    assert_eq!(loaded.len(), 3);
    assert_eq!(loaded[2].state, Health::Up);

    assert!(store.remove_target("redis", "e1").await.unwrap());
    assert!(!store.remove_target("redis", "e1").await.unwrap());
    assert!(!store.remove_target("nowhere", "e1").await.unwrap());
    assert_eq!(
        names(&store.load_targets("redis").await.unwrap()),
        ["node-01", "node-02"]
    );

    let applied = AppliedRecord {
        schema: SCHEMA_VERSION,
        ready: vec!["198.51.100.10".into()],
        not_ready: vec!["198.51.100.11".into()],
        resource_version: Some("812".into()),
        applied_at: state_store::now_ms(),
    };
    store.save_applied("emqx", &applied).await.unwrap();
    assert_eq!(
        store.load_applied("emqx").await.unwrap(),
        Some(applied.clone())
    );
    let newer = AppliedRecord {
        ready: Vec::new(),
        ..applied
    };
    store.save_applied("emqx", &newer).await.unwrap();
    assert_eq!(store.load_applied("emqx").await.unwrap(), Some(newer));
    assert_eq!(store.services().await.unwrap(), ["emqx", "redis"]);
    // Services do not share records.
    assert!(store.load_targets("emqx").await.unwrap().is_empty());
    assert_eq!(store.load_applied("redis").await.unwrap(), None);
}

async fn many_targets_of_one_service(make: Factory<'_>) {
    let store = make("many").await;
    let records: Vec<TargetRecord> = (0..300)
        .map(|n| target("big", &format!("node-{n:03}"), Health::Up))
        .collect();
    store.save_targets("big", &records).await.unwrap();
    let loaded = store.load_targets("big").await.unwrap();
    assert_eq!(loaded.len(), 300);
    assert_eq!(loaded, records);
}

async fn events_are_capped_ordered_and_filtered(make: Factory<'_>) {
    let store = make("events").await;
    assert!(store.recent_events(None, 10).await.unwrap().is_empty());
    for n in 0..200 {
        store
            .append_event(&event(if n % 2 == 0 { "even" } else { "odd" }, n))
            .await
            .unwrap();
    }
    let all = store.recent_events(None, 1000).await.unwrap();
    assert!(
        (CAP..=CAP + 10).contains(&all.len()),
        "about {CAP} kept, got {}",
        all.len()
    );
    assert_eq!(all.last().unwrap().at, 199, "the newest is kept");
    assert!(ats(&all).windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert_eq!(
        ats(&store.recent_events(None, 3).await.unwrap()),
        [197, 198, 199]
    );
    let odd = store.recent_events(Some("odd"), 1000).await.unwrap();
    assert!(odd.len() >= CAP / 2 && odd.iter().all(|e| e.service == "odd"));
    assert_eq!(
        ats(&store.recent_events(Some("even"), 2).await.unwrap()),
        [196, 198]
    );
    assert!(
        store
            .recent_events(Some("none"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.recent_events(None, 0).await.unwrap().is_empty());
    assert_eq!(all[0], {
        let first = all[0].at;
        event(if first % 2 == 0 { "even" } else { "odd" }, first)
    });
}

async fn suite(backend: &str, make: Factory<'_>) {
    eprintln!("{backend}: round trip");
    targets_applied_and_services_round_trip(make).await;
    eprintln!("{backend}: many targets");
    many_targets_of_one_service(make).await;
    eprintln!("{backend}: events");
    events_are_capped_ordered_and_filtered(make).await;
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    let make = |_: &str| -> futures::future::BoxFuture<'static, Arc<dyn StateStore>> {
        Box::pin(async { Arc::new(MemoryStore::with_event_capacity(CAP)) as Arc<dyn StateStore> })
    };
    suite("memory", &make).await;
    assert!(!MemoryStore::new().durable());
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    // Small stream nodes, so that `XADD … MAXLEN ~` trims close to the cap.
    let Some(redis) = RedisServer::start_with_args(&["--stream-node-max-entries", "10"]).unwrap()
    else {
        return;
    };
    let address = redis.address();
    let make = move |prefix: &str| -> futures::future::BoxFuture<'static, Arc<dyn StateStore>> {
        let options = RedisOptions {
            key_prefix: format!("{prefix}:"),
            events_max_len: CAP as u64,
            ..RedisOptions::new(address.clone())
        };
        Box::pin(async move {
            let store = RedisStore::connect(options).await.unwrap();
            assert!(store.durable());
            Arc::new(store) as Arc<dyn StateStore>
        })
    };
    suite("redis", &make).await;
}

#[tokio::test]
async fn etcd_store_keeps_the_contract() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let endpoint = etcd.endpoint();
    let make = move |prefix: &str| -> futures::future::BoxFuture<'static, Arc<dyn StateStore>> {
        let options = EtcdOptions {
            key_prefix: format!("{prefix}/"),
            events_max_len: CAP as u64,
            ..EtcdOptions::new([endpoint.clone()])
        };
        Box::pin(async move {
            let store = EtcdStore::connect(options).await.unwrap();
            assert!(store.durable());
            Arc::new(store) as Arc<dyn StateStore>
        })
    };
    suite("etcd", &make).await;
}
