//! Connecting: refused, credentials, TLS with client certificates, outages and recovery.

use std::time::{Duration, Instant};

use state_store::{Error, EtcdOptions, EtcdStore, Health, StateStore};

use crate::{EtcdServer, options, raw, target};

/// The error with its whole source chain and debug form, as a log could show it.
fn shown(err: &Error) -> String {
    let mut text = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    text
}

#[tokio::test]
async fn nothing_listening_is_a_clear_transient_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdStore::connect(EtcdOptions::new([endpoint.clone()]))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let text = shown(&err);
    assert!(matches!(err, Error::EtcdUnavailable { .. }), "{text}");
    assert!(err.is_transient());
    assert!(
        text.contains(&endpoint) && text.contains("etcd.endpoints"),
        "{text}"
    );
}

#[tokio::test]
async fn credentials_are_checked_and_never_shown() {
    let Some(etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let password = "s3cret-Pa55";
    let mut admin = raw(&etcd).await;
    admin.user_add("root", "root-Pa55", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.user_add("epcheck", password, None).await.unwrap();
    admin.role_add("epcheck").await.unwrap();
    admin
        .role_grant_permission(
            "epcheck",
            etcd_client::Permission::read_write("epcheck/").with_prefix(),
        )
        .await
        .unwrap();
    admin.user_grant_role("epcheck", "epcheck").await.unwrap();
    admin.auth_enable().await.unwrap();

    let with = |user: Option<&str>, pw: Option<&str>| EtcdOptions {
        username: user.map(str::to_owned),
        password: pw.map(Into::into),
        ..options(&etcd)
    };
    let store = EtcdStore::connect(with(Some("epcheck"), Some(password)))
        .await
        .unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 1);

    let wrong = "wr0ng-Pa55";
    let err = EtcdStore::connect(with(Some("epcheck"), Some(wrong)))
        .await
        .unwrap_err();
    let text = shown(&err);
    assert!(matches!(err, Error::EtcdAuth { .. }), "{text}");
    assert!(!err.is_transient());
    assert!(
        text.contains("etcd.password_file") && text.contains(&etcd.endpoint()),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(password), "{text}");

    // Without credentials the user has no right to the keys: a command error, not a crash.
    let anonymous = EtcdStore::connect(options(&etcd)).await;
    let err = anonymous.map(drop).unwrap_err();
    assert!(
        matches!(err, Error::EtcdCommand { .. } | Error::EtcdAuth { .. }),
        "{}",
        shown(&err)
    );

    // A user without rights outside its prefix is refused there, and says where.
    let elsewhere = EtcdStore::connect(EtcdOptions {
        key_prefix: "other/".into(),
        ..with(Some("epcheck"), Some(password))
    })
    .await
    .unwrap_err();
    let text = shown(&elsewhere);
    assert!(text.contains("etcd.key_prefix"), "{text}");

    // A store started lazily with a wrong password keeps saying why its calls fail.
    let lazy = EtcdStore::new_lazy(with(Some("epcheck"), Some(wrong)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = lazy.ping().await.unwrap_err();
    let text = shown(&err);
    assert!(matches!(err, Error::EtcdAuth { .. }), "{text}");
    assert!(!text.contains(wrong), "{text}");
}

#[tokio::test]
async fn tls_with_a_client_certificate() {
    let Some(etcd) = EtcdServer::start_tls().unwrap() else {
        return;
    };
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"));
    // host:port becomes https when TLS files are given.
    let plain_address = endpoint.trim_start_matches("https://").to_owned();
    let store = EtcdStore::connect(EtcdOptions {
        ca_file: Some(etcd.ca_file()),
        cert_file: Some(etcd.client_cert()),
        key_file: Some(etcd.client_key()),
        ..EtcdOptions::new([plain_address])
    })
    .await
    .unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 1);

    // The server asks for a client certificate: without one, no connection.
    let err = EtcdStore::connect(EtcdOptions {
        ca_file: Some(etcd.ca_file()),
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..EtcdOptions::new([endpoint.clone()])
    })
    .await
    .unwrap_err();
    assert!(err.is_transient(), "{}", shown(&err));

    // A CA that did not sign the server's certificate: refused too.
    let dir = tempfile::tempdir().unwrap();
    let stranger = dir.path().join("stranger.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(&stranger, cert.cert.pem()).unwrap();
    let err = EtcdStore::connect(EtcdOptions {
        ca_file: Some(stranger),
        cert_file: Some(etcd.client_cert()),
        key_file: Some(etcd.client_key()),
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        ..EtcdOptions::new([endpoint])
    })
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::EtcdUnavailable { .. }),
        "{}",
        shown(&err)
    );
}

#[tokio::test]
async fn an_outage_fails_calls_fast_and_the_store_comes_back_by_itself() {
    let Some(mut etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    let store = EtcdStore::connect(options(&etcd)).await.unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();

    etcd.stop();
    let started = Instant::now();
    let err = store
        .save_target("redis", &target("redis", "b", Health::Down))
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("a call while etcd is killed failed after {took:?}");
    assert!(err.is_transient(), "{}", shown(&err));
    assert!(
        took <= Duration::from_millis(2500),
        "a call while etcd is down took {took:?}"
    );

    // etcd comes back with its data; the same store works again without being rebuilt.
    etcd.restart().unwrap();
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        match store
            .save_target("redis", &target("redis", "b", Health::Down))
            .await
        {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not come back: {}", shown(&e)),
        }
    }
    eprintln!(
        "calls succeed again {:?} after etcd was healthy",
        back.elapsed()
    );
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 2);

    // A frozen server (connections open, nothing answers) costs one command timeout.
    etcd.pause();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    etcd.resume();
    eprintln!(
        "a call to a frozen etcd failed after {:?}",
        started.elapsed()
    );
    assert!(err.is_transient(), "{}", shown(&err));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_lazy_store_starts_before_etcd_does() {
    let Some(mut etcd) = EtcdServer::start().unwrap() else {
        return;
    };
    etcd.stop();
    let store = EtcdStore::new_lazy(options(&etcd)).await.unwrap();
    let err = store.ping().await.unwrap_err();
    assert!(err.is_transient(), "{}", shown(&err));
    etcd.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// etcd's simple auth tokens expire (`--auth-token-ttl`, 300 s by default; 1 s here): a store
/// left idle longer than that authenticates again by itself, the lock included.
#[tokio::test]
async fn an_expired_auth_token_is_renewed_by_itself() {
    let Some(etcd) = EtcdServer::start_with_args(&["--auth-token-ttl=1"]).unwrap() else {
        return;
    };
    etcd.enable_auth("epcheck", "t0ken-Pa55", "epcheck/")
        .unwrap();
    let store = EtcdStore::connect(EtcdOptions {
        username: Some("epcheck".into()),
        password: Some("t0ken-Pa55".into()),
        ..options(&etcd)
    })
    .await
    .unwrap();
    let lock = store.lock("epcheck");
    assert!(
        lock.try_acquire("pod-a", Duration::from_secs(10))
            .await
            .unwrap()
    );
    // Idle well past the token's TTL (etcd checks expiry about every second).
    tokio::time::sleep(Duration::from_secs(4)).await;
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(lock.renew("pod-a", Duration::from_secs(10)).await.unwrap());
    assert!(lock.release("pod-a").await.unwrap());
}
