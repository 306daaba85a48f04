//! The TCP probe and the static check against loopback targets from `fixtures`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fixtures::targets::{AcceptingTarget, HangingTarget, RefusingTarget};
use probe_core::{
    Check, Expect, FailureKind, ProbeOutcome, Prober, ProberOptions, Target, TcpCheck,
};

const TIMEOUT: Duration = Duration::from_millis(300);

fn prober() -> Prober {
    Prober::new(ProberOptions {
        timeout: TIMEOUT,
        concurrency: 16,
    })
}

fn target(addr: SocketAddr) -> Target {
    Target::new("svc", "node-1", addr.ip(), addr.port())
}

fn tcp(send: Option<&str>, expect: Option<&str>) -> Check {
    Check::Tcp(
        TcpCheck::send_expect(
            send.map(str::to_owned),
            expect.map(|e| Expect::parse(e).unwrap()),
        )
        .unwrap(),
    )
}

fn kind(outcome: &ProbeOutcome) -> Option<FailureKind> {
    outcome.failure_kind()
}

#[tokio::test]
async fn accepting_target_is_up_with_latency() {
    let t = AcceptingTarget::start().await.unwrap();
    let outcome = prober().probe(&target(t.addr()), &Check::tcp()).await;
    assert!(outcome.up, "{outcome:?}");
    assert_eq!(outcome.error, None);
    assert!(outcome.latency > Duration::ZERO && outcome.latency < TIMEOUT);
}

#[tokio::test]
async fn refusing_target_is_refused() {
    let t = RefusingTarget::new().unwrap();
    let outcome = prober().probe(&target(t.addr()), &Check::tcp()).await;
    assert!(!outcome.up);
    assert_eq!(kind(&outcome), Some(FailureKind::Refused));
    assert_eq!(outcome.error.unwrap().to_string(), "connection refused");
}

#[tokio::test]
async fn hanging_target_times_out_within_the_timeout() {
    let t = HangingTarget::start().await.unwrap();
    let started = Instant::now();
    let outcome = prober().probe(&target(t.addr()), &Check::tcp()).await;
    let elapsed = started.elapsed();
    assert_eq!(kind(&outcome), Some(FailureKind::Timeout), "{outcome:?}");
    assert_eq!(outcome.error.unwrap().message, "timed out after 300 ms");
    assert!(elapsed >= TIMEOUT, "{elapsed:?}");
    assert!(elapsed < TIMEOUT * 2, "{elapsed:?}");
    assert!(outcome.latency >= TIMEOUT);
}

#[tokio::test]
async fn send_expect_matches_substring_and_regex() {
    let t = AcceptingTarget::with_reply(b"+PONG\r\n").await.unwrap();
    for expect in ["+PONG", r"/^\+PO[N]G\r\n$/"] {
        let outcome = prober()
            .probe(&target(t.addr()), &tcp(Some("PING\r\n"), Some(expect)))
            .await;
        assert!(outcome.up, "{expect}: {outcome:?}");
    }
}

#[tokio::test]
async fn send_expect_mismatch_is_an_unexpected_reply() {
    let t = AcceptingTarget::with_reply(b"+PONG\r\n").await.unwrap();
    let outcome = prober()
        .probe(
            &target(t.addr()),
            &tcp(Some("INFO replication\r\n"), Some("role:master")),
        )
        .await;
    assert_eq!(kind(&outcome), Some(FailureKind::UnexpectedReply));
    let message = outcome.error.unwrap().message;
    assert!(message.contains("\"role:master\""), "{message}");
    assert!(message.contains(r"+PONG\r\n"), "{message}");
}

#[tokio::test]
async fn send_without_expect_only_needs_the_write() {
    let t = AcceptingTarget::start().await.unwrap();
    let outcome = prober()
        .probe(&target(t.addr()), &tcp(Some("PING\r\n"), None))
        .await;
    assert!(outcome.up, "{outcome:?}");
}

#[tokio::test]
async fn expect_bounded_by_the_same_timeout() {
    // The reply target waits for a request that never comes, so no reply arrives either.
    let t = AcceptingTarget::with_reply(b"SSH-2.0-x\r\n").await.unwrap();
    let started = Instant::now();
    let outcome = prober()
        .probe(&target(t.addr()), &tcp(None, Some("SSH-")))
        .await;
    assert!(started.elapsed() < TIMEOUT * 2);
    assert_eq!(kind(&outcome), Some(FailureKind::Timeout));
    let message = outcome.error.unwrap().message;
    assert!(
        message.starts_with("timed out after 300 ms waiting for a reply matching \"SSH-\""),
        "{message}"
    );
}

#[tokio::test]
async fn peer_closing_without_reply_is_an_unexpected_reply() {
    let t = AcceptingTarget::start().await.unwrap();
    let outcome = prober()
        .probe(&target(t.addr()), &tcp(Some("PING\r\n"), Some("+PONG")))
        .await;
    assert!(!outcome.up);
    // Accept-and-drop closes with a FIN (end of stream) or, if our bytes were still unread, a
    // reset; both are failures, and neither is a timeout.
    assert!(
        matches!(
            kind(&outcome),
            Some(FailureKind::UnexpectedReply | FailureKind::Other)
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn static_check_is_always_up() {
    let unused = Target::new("svc", "static", "127.0.0.1".parse().unwrap(), 0);
    for _ in 0..3 {
        let outcome = prober().probe(&unused, &Check::Static).await;
        assert_eq!(outcome, ProbeOutcome::up(Duration::ZERO));
    }
}

/// The decision documented in the crate: probes close with a reset, so no socket of theirs is
/// left in TIME_WAIT (neither ours nor, since the reset also ends the server's side, the target's).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn probes_leave_no_time_wait() {
    let t = AcceptingTarget::start().await.unwrap();
    let p = prober();
    for _ in 0..20 {
        assert!(p.probe(&target(t.addr()), &Check::tcp()).await.up);
    }
    // Give the accept loop a moment to drop its side.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let port = format!(":{:04X} ", t.addr().port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let time_wait: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|l| l.contains(&port))
        .filter(|l| l.split_whitespace().nth(3) == Some("06"))
        .collect();
    assert!(
        time_wait.is_empty(),
        "TIME_WAIT sockets left: {time_wait:#?}"
    );
}

#[tokio::test]
async fn ipv6_loopback_when_available() {
    let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
    };
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let t = target(addr);
    assert_eq!(t.to_string(), format!("svc/node-1 [::1]:{}", addr.port()));
    assert!(prober().probe(&t, &Check::tcp()).await.up);
}

#[tokio::test]
async fn a_timed_out_expect_reports_exactly_what_was_received() {
    // Replies, then keeps the connection open without the expected text: the probe times out
    // while a read is pending, and must report the seven bytes it got, not a padded buffer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"+PONG\r\n")
            .await
            .unwrap();
        tokio::time::sleep(TIMEOUT * 4).await;
    });
    let outcome = prober()
        .probe(&target(addr), &tcp(Some("PING\r\n"), Some("role:master")))
        .await;
    assert_eq!(kind(&outcome), Some(FailureKind::Timeout), "{outcome:?}");
    let message = outcome.error.unwrap().message;
    assert!(
        message.ends_with(r#"(received 7 bytes: "+PONG\r\n")"#),
        "{message}"
    );
    server.abort();
}

/// A half-open check is up when the target answers the SYN, and the target never accepts it:
/// the reset goes before the handshake's final ACK. A full connect check of the same listener
/// is accepted. Refused and hanging targets are down as with a full handshake.
#[tokio::test]
async fn half_open_check_is_up_and_never_accepted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let half = Check::Tcp(TcpCheck::half_open());
    for _ in 0..5 {
        let outcome = prober().probe(&target(addr), &half).await;
        assert!(outcome.up, "{outcome:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let accepted = |l: &std::net::TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
    if cfg!(target_os = "linux") {
        assert_eq!(accepted(&listener), 0, "a half-open check reached accept()");
    }
    let full = prober().probe(&target(addr), &Check::tcp()).await;
    assert!(full.up, "{full:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted(&listener), 1, "a full connect check is accepted");

    let refusing = RefusingTarget::new().unwrap();
    let outcome = prober().probe(&target(refusing.addr()), &half).await;
    assert_eq!(kind(&outcome), Some(FailureKind::Refused));
    let hanging = HangingTarget::start().await.unwrap();
    let outcome = prober().probe(&target(hanging.addr()), &half).await;
    assert_eq!(kind(&outcome), Some(FailureKind::Timeout));
}
