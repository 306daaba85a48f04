//! Records, events, key prefix and db.

use std::time::Duration;

use state_store::{
    AppliedRecord, Health, RedisOptions, RedisStore, SCHEMA_VERSION, StateStore, TargetRecord,
};

use crate::server::RedisServer;
use crate::{ats, event, target};

/// What every store promises is in `tests/contract.rs`; here, what is Redis's own: records
/// another writer broke are skipped, not fatal.
#[tokio::test]
async fn records_that_do_not_parse_are_skipped() {
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let store = RedisStore::connect(redis.options()).await.unwrap();
    assert_eq!(store.kind(), "redis");
    store
        .save_targets(
            "redis",
            &[
                target("redis", "node-01", Health::Up),
                target("redis", "node-02", Health::Down),
            ],
        )
        .await
        .unwrap();
    let applied = AppliedRecord {
        schema: SCHEMA_VERSION,
        ready: vec!["198.51.100.10".into()],
        not_ready: Vec::new(),
        resource_version: Some("812".into()),
        applied_at: state_store::now_ms(),
    };
    store.save_applied("emqx", &applied).await.unwrap();
    assert_eq!(store.load_applied("emqx").await.unwrap(), Some(applied));

    redis.cli(&["HSET", "epcheck:redis:targets", "broken", "{not json"]);
    redis.cli(&["SET", "epcheck:emqx:applied", "garbage"]);
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 2);
    assert_eq!(store.load_applied("emqx").await.unwrap(), None);
    store.close().await;
}

#[tokio::test]
async fn events_are_capped_ordered_and_filtered() {
    // Small stream nodes so that `MAXLEN ~` trims close to the cap.
    let Some(redis) = RedisServer::start(&["--stream-node-max-entries", "10"]).await else {
        return;
    };
    let store = RedisStore::connect(RedisOptions {
        events_max_len: 50,
        ..redis.options()
    })
    .await
    .unwrap();
    for n in 0..300 {
        store
            .append_event(&event(if n % 2 == 0 { "even" } else { "odd" }, n))
            .await
            .unwrap();
    }
    let count = store.event_count().await.unwrap();
    assert!((50..=60).contains(&count), "about 50 kept, got {count}");
    assert_eq!(
        ats(&store.recent_events(None, 3).await.unwrap()),
        [297, 298, 299]
    );
    let odd = store.recent_events(Some("odd"), 1000).await.unwrap();
    assert!(
        odd.len() >= 25 && odd.iter().all(|e| e.service == "odd"),
        "{}",
        odd.len()
    );
    assert!(ats(&odd).windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert_eq!(
        ats(&store.recent_events(Some("even"), 2).await.unwrap()),
        [296, 298]
    );
    assert!(
        store
            .recent_events(Some("none"), 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.recent_events(None, 0).await.unwrap().is_empty());

    // A filter pages back through the stream (more entries than one XREVRANGE page).
    let big = RedisStore::connect(RedisOptions {
        key_prefix: "big:".into(),
        ..redis.options()
    })
    .await
    .unwrap();
    big.append_event(&event("rare", 1)).await.unwrap();
    redis.cli(&["XADD", "big:events", "*", "svc", "rare", "event", "garbage"]);
    for n in 2..1200 {
        big.append_event(&event("busy", n)).await.unwrap();
    }
    assert_eq!(
        ats(&big.recent_events(Some("rare"), 10).await.unwrap()),
        [1]
    );
}

#[tokio::test]
async fn key_prefix_and_db_are_respected() {
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let default = RedisStore::connect(redis.options()).await.unwrap();
    let other = RedisStore::connect(RedisOptions {
        key_prefix: "team-b/".into(),
        ..redis.options()
    })
    .await
    .unwrap();
    let db3 = RedisStore::connect(RedisOptions::new(format!("redis://{}/3", redis.address())))
        .await
        .unwrap();
    default
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();
    other
        .save_target("redis", &target("redis", "b", Health::Up))
        .await
        .unwrap();
    db3.save_target("redis", &target("redis", "c", Health::Up))
        .await
        .unwrap();
    default.append_event(&event("redis", 1)).await.unwrap();
    let lock = other.lock("epcheck");
    assert!(
        lock.try_acquire("me", Duration::from_secs(5))
            .await
            .unwrap()
    );

    let mut keys: Vec<String> = redis
        .cli(&["KEYS", "*"])
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "epcheck:events",
            "epcheck:redis:targets",
            "epcheck:services",
            "team-b/lock:epcheck",
            "team-b/redis:targets",
            "team-b/services",
        ]
    );
    assert_eq!(lock.key(), "team-b/lock:epcheck");
    assert_eq!(
        redis
            .cli(&["-n", "3", "HKEYS", "epcheck:redis:targets"])
            .trim(),
        "c"
    );
    let name = |s: Vec<TargetRecord>| s.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(name(default.load_targets("redis").await.unwrap()), ["a"]);
    assert_eq!(name(other.load_targets("redis").await.unwrap()), ["b"]);
    assert_eq!(name(db3.load_targets("redis").await.unwrap()), ["c"]);
    assert!(other.recent_events(None, 10).await.unwrap().is_empty());
}
