//! Secrets never reach a log line, an error or an output (SPEC §13), whatever the verbosity.

use fixtures::redis::RedisServer;

use crate::util::{Epcheck, seed};

const WRONG_PASSWORD: &str = "wr0ng-pw-5yq8e1";

/// Issue 18: at `-v`, the Redis client's own logging printed the password, echoed back in a
/// `WRONGPASS` error. Third-party log output is filtered, at every verbosity.
#[test]
fn a_wrong_redis_password_never_reaches_the_logs() {
    let Some(redis) = RedisServer::start_with_password("the-right-one-3k").unwrap() else {
        return;
    };
    let e = Epcheck::new();
    e.write("conf/token", "abc.def");
    let text = seed().replacen("password: 123", &format!("password: {WRONG_PASSWORD}"), 1);
    let text = text.replacen(
        "ipport: 172.16.0.61:6379",
        &format!("ipport: {}", redis.address()),
        1,
    );
    assert!(
        text.contains(&redis.address()),
        "the seed's redis block changed:\n{text}"
    );
    let path = e.write("c.yaml", &text);
    let p = path.to_str().unwrap();
    for verbosity in ["-v", "-vv", "-vvv"] {
        let r = e.run(&[verbosity, "status", "-f", p]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(
            !r.all().contains(WRONG_PASSWORD),
            "{verbosity}: the password reached the output:\n{}",
            r.all()
        );
        // The Redis client's own log lines (which quote the server's replies) are filtered out.
        assert!(
            !r.stderr.contains(" fred::"),
            "{verbosity}: the Redis client's own logging got through:\n{}",
            r.stderr
        );
        assert!(r.stderr.contains("refused the credentials"), "{}", r.stderr);
    }
}

/// A server without a password answers a client that sends one with a reply that quotes the
/// AUTH command (older servers quoted the password itself); the Redis client logged that reply
/// as a warning.
#[test]
fn a_password_sent_to_a_server_without_one_is_not_logged() {
    let Some(redis) = RedisServer::start().unwrap() else {
        return;
    };
    let e = Epcheck::new();
    let text = seed()
        .replacen("password: 123", &format!("password: {WRONG_PASSWORD}"), 1)
        .replacen(
            "ipport: 172.16.0.61:6379",
            &format!("ipport: {}", redis.address()),
            1,
        );
    // Never let the reference config's own Redis address through (loopback only).
    assert!(
        text.contains(&redis.address()),
        "the seed's redis block changed:\n{text}"
    );
    let path = e.write("c.yaml", &text);
    let r = e.run(&["-vvv", "status", "-f", path.to_str().unwrap()]);
    assert!(!r.all().contains(WRONG_PASSWORD), "{}", r.all());
    assert!(!r.stderr.contains(" fred::"), "{}", r.stderr);
    assert!(!r.stderr.contains("AUTH"), "{}", r.stderr);
}

/// Issue 18: `once` printed an ApiServer URL with `user:password@` whole. Every command now
/// refuses such a config with an error naming the key, and the password appears nowhere.
#[test]
fn an_apiserver_url_with_a_password_is_refused_and_never_shown() {
    let e = Epcheck::new();
    e.write("conf/token", "abc.def");
    let text = seed().replacen("url: https://", "url: https://admin:hunter2-pw@", 1);
    let path = e.write("c.yaml", &text);
    let p = path.to_str().unwrap();
    for args in [
        vec!["validate", "-f", p],
        vec!["-vv", "once", "-f", p],
        vec!["once", "--dry-run", "-f", p],
        vec!["plan", "-f", p],
        vec!["manifests", "-f", p],
    ] {
        let r = e.run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(r.all().contains("url"), "{args:?}: {}", r.all());
        assert!(
            r.all().contains("carries credentials"),
            "{args:?}: {}",
            r.all()
        );
        assert!(!r.all().contains("hunter2-pw"), "{args:?}: {}", r.all());
    }
}

/// etcd with authentication on: a wrong password is reported as refused credentials by
/// `status` and by the running daemon, and never appears, at any verbosity; the gRPC stack's
/// own log lines (tonic, h2) are filtered out like the Redis client's.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_etcd_password_never_reaches_the_logs() {
    let Some(etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    etcd.enable_auth("epcheck", "the-right-one-7q", "epcheck/")
        .unwrap();
    let e = Epcheck::new();
    e.write("conf/token", "abc.def");
    let redis = "redis:\n  ipport: 172.16.0.61:6379\n  password: 123\n";
    assert!(seed().contains(redis));
    let with = |password: &str| {
        seed().replacen(
            redis,
            &format!(
                "etcd:\n  endpoints: [\"{}\"]\n  username: epcheck\n  password: {password}\n",
                etcd.endpoint()
            ),
            1,
        )
    };
    let path = e.write("c.yaml", &with(WRONG_PASSWORD));
    let p = path.to_str().unwrap();
    for verbosity in ["-v", "-vvv"] {
        let r = e.run(&[verbosity, "status", "-f", p]);
        assert_ne!(r.code, 0, "{}", r.all());
        assert!(
            !r.all().contains(WRONG_PASSWORD),
            "{verbosity}: the password reached the output:\n{}",
            r.all()
        );
        for foreign in [" tonic::", " h2::", " etcd_client::", " tower::"] {
            assert!(
                !r.stderr.contains(foreign),
                "{verbosity}: {foreign} logging got through:\n{}",
                r.stderr
            );
        }
        assert!(r.stderr.contains("refused the credentials"), "{}", r.stderr);
    }
    // The daemon starts anyway (it must probe without its store) and says why etcd refuses.
    let d = crate::daemon::Daemon::start_with_env(&e, p, &[("EPCHECK_LOG", "trace")]);
    assert!(
        d.wait_log(
            "cannot connect to etcd yet",
            std::time::Duration::from_secs(8)
        )
        .await,
        "{}",
        d.log()
    );
    let (_, _, log) = d.terminate().await;
    assert!(!log.contains(WRONG_PASSWORD), "{log}");
    assert!(log.contains("refused the credentials"), "{log}");
    for foreign in [" tonic::", " h2::", " etcd_client::", " tower::"] {
        assert!(
            !log.contains(foreign),
            "{foreign} logging got through:\n{log}"
        );
    }

    // The right password reads the store (empty: nothing written yet).
    let good = e.write("good.yaml", &with("the-right-one-7q"));
    let r = e.run(&["status", "-f", good.to_str().unwrap(), "-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\"store\": \"etcd\""), "{}", r.stdout);
}
