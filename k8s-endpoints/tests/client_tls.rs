//! TLS against the stand-in ApiServer: its CA (made at test time) on `127.0.0.1` and `::1`,
//! a wrong CA failing with a message that names the CA file and the server, the CA file
//! re-read after a change, and the opt-in "skip verification".
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use fixtures::apiserver::{ApiServer, Permissions};
use k8s_endpoints::client::{
    Client, ClientConfig, ReconcileAction, ReconcileMode, RetryPolicy, TokenSource, TransportKind,
    reconcile,
};
use k8s_endpoints::{Endpoints, Error, NotReadyPolicy, Renderer, Token, codec};

const TOKEN: &str = "tls-test-token-1234";

fn config(api: &ApiServer, ca: Option<&Path>) -> ClientConfig {
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.token = TokenSource::Static(Token::new(TOKEN));
    cfg.ca_file = ca.map(Path::to_path_buf);
    cfg.retry = RetryPolicy::NONE;
    cfg
}

async fn tls_server(bind: IpAddr) -> Option<ApiServer> {
    match ApiServer::builder().tls(true).bind(bind).start().await {
        Ok(api) => {
            api.add_token(TOKEN, Permissions::all());
            api.put_service("default", "redis");
            Some(api)
        }
        Err(e) => {
            eprintln!("skipping: cannot start the stand-in on {bind}: {e}");
            None
        }
    }
}

#[tokio::test]
async fn the_generated_ca_works_on_an_ip_address() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    assert!(api.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    api.write_ca_pem(&ca).unwrap();
    let client = Client::new(config(&api, Some(&ca))).unwrap();

    let template: Endpoints =
        codec::from_yaml("kind: Endpoints\napiVersion: v1\nsubsets:\n- ports: [{port: 6379}]\n")
            .unwrap();
    let renderer =
        Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep).unwrap();
    let ready: Vec<IpAddr> = vec!["198.51.100.1".parse().unwrap()];
    let out = reconcile(&client, &renderer, &ready, &[], ReconcileMode::Apply)
        .await
        .unwrap();
    assert_eq!(out.action, ReconcileAction::Created);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.connection == reqs[0].connection),
        "one TLS connection reused"
    );
}

#[tokio::test]
async fn the_generated_ca_works_on_ipv6_loopback() {
    let Some(api) = tls_server(IpAddr::V6(Ipv6Addr::LOCALHOST)).await else {
        return;
    };
    assert!(api.url().starts_with("https://[::1]:"), "{}", api.url());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    api.write_ca_pem(&ca).unwrap();
    let client = Client::new(config(&api, Some(&ca))).unwrap();
    let svc = client
        .get_service("default", "redis")
        .await
        .unwrap()
        .unwrap();
    assert!(!svc.has_selector());
}

#[tokio::test]
async fn a_wrong_ca_fails_clearly() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let other = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("other-ca.crt");
    other.write_ca_pem(&wrong).unwrap();
    let client = Client::new(config(&api, Some(&wrong))).unwrap();
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::Tls,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake with the ApiServer failed"),
        "{msg}"
    );
    assert!(msg.contains(&wrong.display().to_string()), "{msg}");
    assert!(msg.contains(&api.addr().to_string()), "{msg}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    // Both stand-ins name their CA alike, so rustls sees a bad signature rather than an
    // unknown issuer; either way it is the certificate that is refused.
    assert!(cause.contains("invalid peer certificate"), "{cause}");
    eprintln!("{msg}: {cause}");
    assert!(api.requests().is_empty(), "nothing got past the handshake");
}

#[tokio::test]
async fn no_ca_file_means_public_roots_and_says_so() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let client = Client::new(config(&api, None)).unwrap();
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no CA file is configured"), "{msg}");
}

#[tokio::test]
async fn a_changed_ca_file_is_picked_up() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let other = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    other.write_ca_pem(&ca).unwrap();
    let mut cfg = config(&api, Some(&ca));
    cfg.refresh_period = Duration::from_millis(50);
    let client = Client::new(cfg).unwrap();
    assert!(client.get_endpoints("default", "redis").await.is_err());

    // A broken file: the old roots stay (and the request still fails the same way).
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\ngarbage").unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    let err = client.get_endpoints("default", "redis").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::Tls,
                ..
            }
        ),
        "{err:?}"
    );

    // The right CA: the next request after the period reconnects with it.
    api.write_ca_pem(&ca).unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_bad_ca_file_is_an_error_at_start() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "hello").unwrap();
    let err = Client::new(config(&api, Some(&ca))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&ca.display().to_string()), "{msg}");
    assert!(msg.contains("no PEM certificate"), "{msg}");
    let missing = dir.path().join("missing.crt");
    let msg = Client::new(config(&api, Some(&missing)))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing.crt"), "{msg}");
}

#[tokio::test]
async fn skipping_verification_works_only_when_asked() {
    let api = tls_server(IpAddr::from([127, 0, 0, 1])).await.unwrap();
    let mut cfg = config(&api, None);
    cfg.insecure_skip_tls_verify = true;
    let client = Client::new(cfg).unwrap();
    assert_eq!(
        client.get_endpoints("default", "redis").await.unwrap(),
        None
    );
}
