//! The views of multi-vantage consensus.

use std::time::Duration;

use state_store::RedisStore;

use crate::server::RedisServer;

#[tokio::test]
async fn views_expire_on_their_ttl_and_are_forgotten_only_once_gone() {
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let store = RedisStore::connect(redis.options()).await.unwrap();
    let views = store.views("epcheck");
    assert!(views.read().await.unwrap().is_empty());
    views
        .publish("a", "{\"x\":1}", Duration::from_secs(30))
        .await
        .unwrap();
    views
        .publish("b", "{\"x\":2}", Duration::from_millis(150))
        .await
        .unwrap();
    let read = views.read().await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].replica, "a");
    assert_eq!(read[0].text.as_deref(), Some("{\"x\":1}"));
    assert_eq!(read[1].text.as_deref(), Some("{\"x\":2}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let read = views.read().await.unwrap();
    assert_eq!(read[1].replica, "b");
    assert_eq!(read[1].text, None, "b's view outlived its TTL");
    // A view that is still there is not forgotten; an expired one is.
    assert!(!views.forget("a").await.unwrap());
    assert!(views.forget("b").await.unwrap());
    assert_eq!(views.read().await.unwrap().len(), 1);
    views.withdraw("a").await.unwrap();
    assert!(views.read().await.unwrap().is_empty());
    assert!(
        views
            .publish("a", "x", Duration::ZERO)
            .await
            .unwrap_err()
            .to_string()
            .contains("at least 1 ms")
    );
}
