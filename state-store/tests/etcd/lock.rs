//! The leader lock: a key bound to an etcd lease.

use std::time::{Duration, Instant};

use state_store::{Error, EtcdStore};

use crate::{EtcdServer, options, raw};

#[tokio::test]
async fn lock_is_renewed_and_released_only_by_its_holder() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let store = EtcdStore::connect(options(&etcd)).await.unwrap();
    // Two processes: each lock knows only the lease it took itself.
    let other = EtcdStore::connect(options(&etcd)).await.unwrap();
    let (a, b) = (store.lock("epcheck"), other.lock("epcheck"));
    let ttl = Duration::from_secs(5);

    assert_eq!(a.holder().await.unwrap(), None);
    assert!(a.try_acquire("pod-a", ttl).await.unwrap());
    assert!(
        a.try_acquire("pod-a", ttl).await.unwrap(),
        "acquiring again keeps it"
    );
    assert!(!b.try_acquire("pod-b", ttl).await.unwrap());
    assert_eq!(b.holder().await.unwrap().as_deref(), Some("pod-a"));
    assert!(!b.renew("pod-b", ttl).await.unwrap());
    assert!(!b.release("pod-b").await.unwrap());
    assert!(a.renew("pod-a", ttl).await.unwrap());
    let left = a.remaining().await.unwrap().unwrap();
    assert!(left > Duration::from_secs(3), "{left:?}");

    // The key is bound to the lease: it carries the lease's id.
    let mut c = raw(&etcd).await;
    let kv = c.get("epcheck/_lock/epcheck", None).await.unwrap();
    assert_ne!(kv.kvs()[0].lease(), 0, "the lock key has no lease");

    assert!(a.release("pod-a").await.unwrap());
    assert_eq!(a.holder().await.unwrap(), None);
    assert_eq!(a.remaining().await.unwrap(), None, "the lease was revoked");
    assert!(
        !a.renew("pod-a", ttl).await.unwrap(),
        "a released lock cannot be renewed"
    );
    // No leases are left behind by races lost or releases.
    assert!(c.leases().await.unwrap().leases().is_empty());

    let err = a.try_acquire("pod-a", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(err, Error::EtcdOption { option: "ttl", .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_holder_that_stops_keeping_its_lease_alive_loses_the_lock() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let a = EtcdStore::connect(options(&etcd))
        .await
        .unwrap()
        .lock("epcheck");
    let b = EtcdStore::connect(options(&etcd))
        .await
        .unwrap()
        .lock("epcheck");
    let ttl = Duration::from_secs(2);
    assert!(b.try_acquire("pod-b", ttl).await.unwrap());
    let taken = Instant::now();
    assert!(!a.try_acquire("pod-a", ttl).await.unwrap());
    // pod-b stops renewing; the lease expires on etcd's clock and pod-a takes over.
    while !a.try_acquire("pod-a", ttl).await.unwrap() {
        assert!(taken.elapsed() < Duration::from_secs(6), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expired_after = taken.elapsed();
    assert!(
        expired_after >= Duration::from_millis(1900),
        "taken over after {expired_after:?}, before the 2 s lease ran out"
    );
    assert!(
        !b.renew("pod-b", ttl).await.unwrap(),
        "the old holder cannot renew"
    );
    assert_eq!(a.holder().await.unwrap().as_deref(), Some("pod-a"));
    assert!(a.renew("pod-a", ttl).await.unwrap());

    // Someone deletes the key by hand: the holder's next renewal says it no longer holds it.
    let mut c = raw(&etcd).await;
    c.delete("epcheck/_lock/epcheck", None).await.unwrap();
    assert!(!a.renew("pod-a", ttl).await.unwrap());
}

#[tokio::test]
async fn a_stalled_etcd_is_an_error_within_the_command_timeout() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let lock = EtcdStore::connect(options(&etcd))
        .await
        .unwrap()
        .lock("epcheck");
    let ttl = Duration::from_secs(5);
    assert!(lock.try_acquire("pod-a", ttl).await.unwrap());
    etcd.pause();
    let started = Instant::now();
    let renewed = lock.renew("pod-a", ttl).await;
    let took = started.elapsed();
    etcd.resume();
    let err = renewed.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Once etcd answers again, the holder's lease still lives and it renews.
    assert!(lock.renew("pod-a", ttl).await.unwrap());
}
