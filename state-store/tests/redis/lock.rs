//! The leader lock.

use std::time::Duration;

use state_store::{Error, RedisStore};

use crate::server::RedisServer;

#[tokio::test]
async fn lock_is_renewed_and_released_only_by_its_holder() {
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let store = RedisStore::connect(redis.options()).await.unwrap();
    let (a, b) = (store.lock("epcheck"), store.clone().lock("epcheck"));
    let ttl = Duration::from_secs(5);

    assert_eq!(a.holder().await.unwrap(), None);
    assert!(a.try_acquire("pod-a", ttl).await.unwrap());
    assert!(
        a.try_acquire("pod-a", ttl).await.unwrap(),
        "acquiring again extends"
    );
    assert!(!b.try_acquire("pod-b", ttl).await.unwrap());
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("pod-a"));
    assert!(!b.renew("pod-b", ttl).await.unwrap());
    assert!(!b.release("pod-b").await.unwrap());
    assert!(a.renew("pod-a", Duration::from_secs(60)).await.unwrap());
    assert!(a.remaining().await.unwrap().unwrap() > Duration::from_secs(50));
    assert!(a.release("pod-a").await.unwrap());
    assert_eq!(a.holder().await.unwrap(), None);
    assert_eq!(a.remaining().await.unwrap(), None);
    assert!(
        !a.renew("pod-a", ttl).await.unwrap(),
        "a released lock cannot be renewed"
    );

    // pod-b takes it, stops renewing, and after the TTL pod-a can take over.
    assert!(
        b.try_acquire("pod-b", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(!a.try_acquire("pod-a", ttl).await.unwrap());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(a.try_acquire("pod-a", ttl).await.unwrap());
    assert!(
        !b.renew("pod-b", ttl).await.unwrap(),
        "the old holder cannot renew"
    );
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("pod-a"));

    let err = a.try_acquire("pod-a", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { option: "ttl", .. }),
        "{err}"
    );
}
