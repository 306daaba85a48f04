//! The views of multi-vantage consensus.

use std::time::{Duration, Instant};

use state_store::{Error, EtcdStore};

use crate::{EtcdServer, keys, options};

#[tokio::test]
async fn views_expire_on_their_lease_and_are_forgotten_only_once_gone() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    // Two replicas: each publishes with a lease of its own.
    let a = EtcdStore::connect(options(&etcd))
        .await
        .unwrap()
        .views("epcheck");
    let b = EtcdStore::connect(options(&etcd))
        .await
        .unwrap()
        .views("epcheck");
    assert!(a.read().await.unwrap().is_empty());
    a.publish("a", "{\"x\":1}", Duration::from_secs(30))
        .await
        .unwrap();
    b.publish("b", "{\"x\":2}", Duration::from_secs(2))
        .await
        .unwrap();
    let published = Instant::now();
    // Publishing again keeps the same lease alive and replaces the text.
    a.publish("a", "{\"x\":3}", Duration::from_secs(30))
        .await
        .unwrap();
    let read = a.read().await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].replica, "a");
    assert_eq!(read[0].text.as_deref(), Some("{\"x\":3}"));
    assert_eq!(read[1].text.as_deref(), Some("{\"x\":2}"));
    assert_eq!(
        keys(&etcd, "epcheck/_views/").await,
        [
            "epcheck/_views/epcheck/member/a",
            "epcheck/_views/epcheck/member/b",
            "epcheck/_views/epcheck/view/a",
            "epcheck/_views/epcheck/view/b",
        ]
    );
    // b stops publishing: its view goes with its lease, on etcd's clock; its name stays.
    while a.read().await.unwrap()[1].text.is_some() {
        assert!(
            published.elapsed() < Duration::from_secs(6),
            "b's view outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published.elapsed() >= Duration::from_millis(1900));
    let read = a.read().await.unwrap();
    assert_eq!(
        (read[1].replica.as_str(), read[1].text.as_deref()),
        ("b", None)
    );
    // A view that is still there is not forgotten; an expired one is.
    assert!(!a.forget("a").await.unwrap());
    assert!(a.forget("b").await.unwrap());
    assert!(!a.forget("b").await.unwrap(), "already gone");
    assert_eq!(a.read().await.unwrap().len(), 1);
    a.withdraw("a").await.unwrap();
    assert!(a.read().await.unwrap().is_empty());
    assert!(keys(&etcd, "epcheck/_views/").await.is_empty());
    assert!(matches!(
        a.publish("a", "x", Duration::ZERO).await.unwrap_err(),
        Error::EtcdOption { option: "ttl", .. }
    ));
}
