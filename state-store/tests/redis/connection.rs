//! Authentication, TLS, Redis going away and coming back, and starting before Redis.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use state_store::{Error, Health, RedisOptions, RedisStore, StateStore};

use crate::server::RedisServer;
use crate::target;

#[tokio::test]
async fn password_and_acl_user() {
    let password = "s3cret-Pa55";
    let Some(redis) = RedisServer::start_with(&[], Some(password)).await else {
        return;
    };
    let store = RedisStore::connect(redis.options()).await.unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();

    let wrong = "wr0ng-Pa55";
    for (options, secret) in [
        (
            RedisOptions {
                password: Some(wrong.into()),
                ..redis.options()
            },
            wrong,
        ),
        (
            RedisOptions::new(format!("redis://:{wrong}@{}", redis.address())),
            wrong,
        ),
    ] {
        let err = RedisStore::connect(options).await.unwrap_err();
        let shown = format!(
            "{err} | {err:?} | {}",
            std::error::Error::source(&err).unwrap()
        );
        assert!(matches!(err, Error::Auth { .. }), "{shown}");
        assert!(
            shown.contains(&redis.address()) && shown.contains("redis.password"),
            "{shown}"
        );
        assert!(
            !shown.contains(secret) && !shown.contains(password),
            "{shown}"
        );
    }
    // No password at all: refused while connecting (NOAUTH), with the same advice.
    let err = RedisStore::connect(RedisOptions::new(redis.address()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // A lazily connecting store with a wrong password explains why calls fail.
    let lazy = RedisStore::new_lazy(RedisOptions {
        password: Some(wrong.into()),
        ..redis.options()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = lazy.ping().await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // An ACL user with its own password.
    redis.cli(&[
        "ACL",
        "SETUSER",
        "epcheck",
        "on",
        ">user-pw",
        "~epcheck:*",
        "+@all",
    ]);
    let user = RedisStore::connect(RedisOptions {
        username: Some("epcheck".into()),
        password: Some("user-pw".into()),
        ..RedisOptions::new(redis.address())
    })
    .await
    .unwrap();
    assert_eq!(user.load_targets("redis").await.unwrap().len(), 1);
}

#[tokio::test]
async fn calls_fail_fast_while_redis_is_down_and_recover_after_restart() {
    let Some(mut redis) = RedisServer::start(&[]).await else {
        return;
    };
    let timeout = Duration::from_secs(1);
    let options = RedisOptions {
        command_timeout: timeout,
        ..redis.options()
    };
    let store = RedisStore::connect(options).await.unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();

    // A writer keeps calling through the crash and the restart, like the daemon would.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut calls: Vec<(Instant, Duration, bool)> = Vec::new();
            loop {
                let started = Instant::now();
                let ok = store
                    .save_target("redis", &target("redis", "w", Health::Up))
                    .await
                    .is_ok();
                calls.push((started, started.elapsed(), ok));
                if calls.len() > 20
                    && calls.iter().rev().take(5).all(|c| c.2)
                    && !calls.iter().all(|c| c.2)
                {
                    return calls;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let err = store
            .save_target("redis", &target("redis", "a", Health::Down))
            .await
            .unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains(&redis.address()), "{err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("while Redis is down, the slowest of 5 calls took {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "calls must fail fast: {slowest:?}"
    );

    // Down long enough for the backoff to reach its maximum, then back on the same port.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    redis.restart().await;
    let restarted = Instant::now();
    let mut failed = 0;
    while let Err(err) = store.ping().await {
        failed += 1;
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no recovery: {err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "recovered {:?} after the restart ({failed} failed calls)",
        restarted.elapsed()
    );
    store
        .save_target("redis", &target("redis", "a", Health::Down))
        .await
        .unwrap();
    assert_eq!(
        store.load_targets("redis").await.unwrap()[0].state,
        Health::Down
    );

    let calls = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .unwrap()
        .unwrap();
    let longest = calls.iter().map(|c| c.1).max().unwrap();
    let errors = calls.iter().filter(|c| !c.2).count();
    let last_error = calls.iter().filter(|c| !c.2).map(|c| c.0).max().unwrap();
    eprintln!(
        "background writer: {} calls, {errors} failed, longest {longest:?}, \
         first success {:?} after the restart",
        calls.len(),
        calls
            .iter()
            .find(|c| c.2 && c.0 > last_error)
            .map(|c| c.0.saturating_duration_since(restarted)),
    );
    assert!(
        longest < timeout + Duration::from_millis(500),
        "a call hung: {longest:?}"
    );
}

#[tokio::test]
async fn an_unresponsive_redis_gives_timeouts_not_hangs() {
    let Some(redis) = RedisServer::start(&[]).await else {
        return;
    };
    let timeout = Duration::from_millis(500);
    let options = RedisOptions {
        command_timeout: timeout,
        ..redis.options()
    };
    let store = RedisStore::connect(options).await.unwrap();
    store.ping().await.unwrap();

    redis.freeze(true);
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        let started = Instant::now();
        let err = store.load_targets("redis").await.unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert!(err.is_transient(), "{err}");
    }
    eprintln!("against a frozen Redis the slowest of 4 calls took {slowest:?}");
    assert!(
        slowest < timeout + Duration::from_millis(500),
        "{slowest:?}"
    );

    redis.freeze(false);
    let thawed = Instant::now();
    while let Err(err) = store.ping().await {
        assert!(
            thawed.elapsed() < Duration::from_secs(10),
            "no recovery: {err}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("answering again {:?} after the thaw", thawed.elapsed());
}

#[tokio::test]
async fn lazy_store_starts_before_redis_and_connect_reports_a_closed_port() {
    let Some(mut redis) = RedisServer::start(&[]).await else {
        return;
    };
    redis.stop();

    let started = Instant::now();
    let err = RedisStore::connect(redis.options()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&redis.address()), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let store = RedisStore::new_lazy(redis.options()).await.unwrap();
    let started = Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(!store.is_connected());

    redis.restart().await;
    assert!(
        store.wait_connected(Duration::from_secs(10)).await,
        "lazy store never connected"
    );
    store.ping().await.unwrap();
}

#[tokio::test]
async fn tls_with_a_test_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { certs.path().join(name) };
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("cert.pem"), cert.pem()).unwrap();
    std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
    let file = |name: &str| path(name).to_string_lossy().into_owned();
    let (cert_file, key_file, ca_file) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let Some(redis) = RedisServer::start(&[
        "--tls-port",
        "PORT",
        "--tls-cert-file",
        &cert_file,
        "--tls-key-file",
        &key_file,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ])
    .await
    else {
        return;
    };

    let options = RedisOptions {
        tls: true,
        tls_ca_file: Some(path("ca.pem")),
        ..redis.options()
    };
    let store = RedisStore::connect(options.clone()).await.unwrap();
    store
        .save_target("redis", &target("redis", "a", Health::Up))
        .await
        .unwrap();
    assert_eq!(store.load_targets("redis").await.unwrap().len(), 1);
    let url = RedisStore::connect(RedisOptions {
        address: format!("rediss://{}", redis.address()),
        ..options.clone()
    });
    url.await.unwrap().ping().await.unwrap();

    // A server certificate that the configured CA did not sign is refused.
    let other_key = KeyPair::generate().unwrap();
    let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(
        path("other-ca.pem"),
        other_params.self_signed(&other_key).unwrap().pem(),
    )
    .unwrap();
    let err = RedisStore::connect(RedisOptions {
        tls_ca_file: Some(path("other-ca.pem")),
        ..options
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("Certificate"),
        "{err:?}"
    );

    // Plain text to the TLS port: connecting or the first call fails, neither hangs.
    let started = Instant::now();
    if let Ok(plain) = RedisStore::connect(redis.options()).await {
        plain.ping().await.unwrap_err();
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
