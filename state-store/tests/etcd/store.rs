//! Where the records live, prefixes, and records another writer broke.

use state_store::{
    AppliedRecord, EtcdOptions, EtcdStore, Health, SCHEMA_VERSION, StateStore, TransitionEvent,
};

use crate::{EtcdServer, keys, options, raw, target};

#[tokio::test]
async fn records_live_under_the_prefix_as_the_spec_names_them() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let default = EtcdStore::connect(options(&etcd)).await.unwrap();
    assert_eq!(default.kind(), "etcd");
    assert_eq!(default.key_prefix(), "epcheck/");
    let other = EtcdStore::connect(EtcdOptions {
        key_prefix: "team-b/".into(),
        ..options(&etcd)
    })
    .await
    .unwrap();
    default
        .save_target("redis", &target("redis", "node-01", Health::Up))
        .await
        .unwrap();
    default
        .save_applied(
            "redis",
            &AppliedRecord {
                schema: SCHEMA_VERSION,
                ready: vec!["198.51.100.10".into()],
                not_ready: Vec::new(),
                resource_version: None,
                applied_at: 1,
            },
        )
        .await
        .unwrap();
    default
        .append_event(&TransitionEvent {
            schema: SCHEMA_VERSION,
            service: "redis".into(),
            target: "node-01".into(),
            ip: "198.51.100.10".parse().unwrap(),
            from: Health::Unknown,
            to: Health::Up,
            at: 1_700_000_000_000,
            error: None,
        })
        .await
        .unwrap();
    other
        .save_target("emqx", &target("emqx", "e1", Health::Down))
        .await
        .unwrap();
    let lock = other.lock("epcheck");
    assert!(
        lock.try_acquire("pod-a", std::time::Duration::from_secs(5))
            .await
            .unwrap()
    );

    let all = keys(&etcd, "").await;
    let event_key = all
        .iter()
        .find(|k| k.starts_with("epcheck/_events/"))
        .unwrap();
    assert!(
        event_key.starts_with("epcheck/_events/0001700000000000-"),
        "{event_key}"
    );
    let mut without_event: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|k| !k.starts_with("epcheck/_events/"))
        .collect();
    without_event.sort_unstable();
    assert_eq!(
        without_event,
        [
            "epcheck/_services/redis",
            "epcheck/redis/applied",
            "epcheck/redis/targets/node-01",
            "team-b/_lock/epcheck",
            "team-b/_services/emqx",
            "team-b/emqx/targets/e1",
        ]
    );
    assert_eq!(lock.key(), "team-b/_lock/epcheck");
    assert_eq!(default.services().await.unwrap(), ["redis"]);
    assert_eq!(other.services().await.unwrap(), ["emqx"]);
    assert!(other.recent_events(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn records_that_do_not_parse_are_skipped() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let store = EtcdStore::connect(options(&etcd)).await.unwrap();
    store
        .save_targets(
            "redis",
            &[
                target("redis", "a", Health::Up),
                target("redis", "b", Health::Down),
            ],
        )
        .await
        .unwrap();
    let mut c = raw(&etcd).await;
    c.put("epcheck/redis/targets/broken", "{not json", None)
        .await
        .unwrap();
    c.put("epcheck/redis/targets/binary", vec![0xff, 0xfe], None)
        .await
        .unwrap();
    c.put("epcheck/redis/applied", "garbage", None)
        .await
        .unwrap();
    c.put("epcheck/_events/0-garbage", "{", None).await.unwrap();
    let loaded = store.load_targets("redis").await.unwrap();
    assert_eq!(
        loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(store.load_applied("redis").await.unwrap(), None);
    assert!(store.recent_events(None, 10).await.unwrap().is_empty());
}
