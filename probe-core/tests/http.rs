//! The HTTP check against small HTTP(S) servers on loopback, started by each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixtures::targets::{AcceptingTarget, HangingTarget, RefusingTarget};
use probe_core::{Check, FailureKind, HttpCheck, ProbeOutcome, Prober, ProberOptions, Target};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const TIMEOUT: Duration = Duration::from_millis(300);

/// What a test server does once it has read a request head.
#[derive(Clone)]
enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Write these bytes and keep the connection open without writing more.
    BytesThenHang(Vec<u8>),
    /// Never answer.
    Silence,
}

/// One request as the server saw it.
#[derive(Clone, Debug, Default)]
struct Seen {
    head: String,
    sni: Option<String>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }
}

/// A raw HTTP/1 server on loopback, optionally behind TLS, recording every request head.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(reply: Reply) -> Self {
        Self::start_at("127.0.0.1:0", reply, None).await.unwrap()
    }

    async fn start_tls(reply: Reply) -> Self {
        Self::start_at("127.0.0.1:0", reply, Some(tls_config()))
            .await
            .unwrap()
    }

    async fn start_at(
        bind: &str,
        reply: Reply,
        tls: Option<Arc<ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (reply, seen, tls) = (reply.clone(), Arc::clone(&recorder), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, reply, seen, None).await,
                        Some(config) => {
                            let Ok(stream) = TlsAcceptor::from(config).accept(stream).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_owned);
                            serve(stream, reply, seen, sni).await;
                        }
                    }
                });
            }
        });
        Ok(Self { addr, seen, task })
    }

    fn target(&self) -> Target {
        Target::new("web", "node-1", self.addr.ip(), self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads a request head and answers. Bytes that do not look like HTTP (a TLS `ClientHello`) get
/// a 400 and a close, as nginx does.
async fn serve<S>(mut stream: S, reply: Reply, seen: Arc<Mutex<Vec<Seen>>>, sni: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if !head[0].is_ascii_uppercase() {
            let _ = stream.write_all(&response(400, "Bad Request")).await;
            let _ = stream.shutdown().await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    seen.lock().unwrap().push(Seen { head, sni });
    match reply {
        Reply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::BytesThenHang(bytes) => {
            let _ = stream.write_all(&bytes).await;
            std::future::pending::<()>().await;
        }
        Reply::Silence => std::future::pending::<()>().await,
    }
}

fn response(status: u16, reason: &str) -> Vec<u8> {
    let length = if status == 204 {
        ""
    } else {
        "Content-Length: 2\r\n"
    };
    let body = if status == 204 { "" } else { "ok" };
    format!("HTTP/1.1 {status} {reason}\r\n{length}Connection: close\r\n\r\n{body}").into_bytes()
}

/// A self-signed certificate for `localhost` (the probe does not verify it).
fn tls_config() -> Arc<ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
    Arc::new(config)
}

fn prober() -> Prober {
    Prober::new(ProberOptions {
        timeout: TIMEOUT,
        concurrency: 16,
    })
}

fn http(check: HttpCheck) -> Check {
    Check::Http(check)
}

async fn probe(target: &Target, check: HttpCheck) -> ProbeOutcome {
    prober().probe(target, &http(check)).await
}

fn message(outcome: &ProbeOutcome) -> String {
    outcome
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn ok_status_is_up_and_the_request_is_as_configured() {
    let server = Server::start(Reply::Bytes(response(200, "OK"))).await;
    let check = HttpCheck::new("/healthz?full=1").unwrap();
    let outcome = probe(&server.target(), check).await;
    assert!(outcome.up, "{outcome:?}");
    assert!(outcome.latency > Duration::ZERO && outcome.latency < TIMEOUT);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line(), "GET /healthz?full=1 HTTP/1.1");
    let port = server.addr.port();
    assert_eq!(
        seen[0].header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(seen[0].header("connection"), Some("close"));
    let agent = seen[0].header("user-agent").unwrap();
    assert_eq!(agent, format!("epcheck/{}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn configured_host_is_sent() {
    let server = Server::start(Reply::Bytes(response(200, "OK"))).await;
    let check = HttpCheck::default().with_host("api.example.com").unwrap();
    assert!(probe(&server.target(), check).await.up);
    let port = server.addr.port();
    let seen = server.seen();
    assert_eq!(
        seen[0].header("host"),
        Some(format!("api.example.com:{port}").as_str())
    );
    assert_eq!(seen[0].request_line(), "GET / HTTP/1.1");
}

#[tokio::test]
async fn unexpected_status_is_down_with_the_status() {
    let server = Server::start(Reply::Bytes(response(503, "Service Unavailable"))).await;
    let outcome = probe(&server.target(), HttpCheck::default()).await;
    assert!(!outcome.up);
    assert_eq!(outcome.failure_kind(), Some(FailureKind::UnexpectedReply));
    assert_eq!(message(&outcome), "HTTP 503, expected 200");
}

#[tokio::test]
async fn expect_status_lists_and_any_2xx() {
    let server = Server::start(Reply::Bytes(response(204, "No Content"))).await;
    let t = server.target();
    let only_204 = HttpCheck::default().with_expect_status([204]).unwrap();
    assert!(probe(&t, only_204).await.up);
    let any_2xx = HttpCheck::default().with_expect_status(Vec::new()).unwrap();
    assert!(probe(&t, any_2xx).await.up);
    let outcome = probe(&t, HttpCheck::default()).await;
    assert_eq!(message(&outcome), "HTTP 204, expected 200");
}

#[tokio::test]
async fn the_body_is_not_read() {
    // A 100 MB body that never finishes: only the head matters.
    let mut bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let server = Server::start(Reply::BytesThenHang(bytes)).await;
    let outcome = probe(&server.target(), HttpCheck::default()).await;
    assert!(outcome.up, "{outcome:?}");
    assert!(outcome.latency < TIMEOUT);
}

#[tokio::test]
async fn silent_server_times_out_within_the_timeout() {
    let server = Server::start(Reply::Silence).await;
    let started = Instant::now();
    let outcome = probe(&server.target(), HttpCheck::default()).await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome.failure_kind(),
        Some(FailureKind::Timeout),
        "{outcome:?}"
    );
    assert_eq!(
        message(&outcome),
        "timed out after 300 ms waiting for the HTTP response"
    );
    assert!(elapsed >= TIMEOUT && elapsed < TIMEOUT * 2, "{elapsed:?}");
}

#[tokio::test]
async fn hanging_connect_times_out() {
    let t = HangingTarget::start().await.unwrap();
    let target = Target::new("web", "node-1", t.addr().ip(), t.addr().port());
    let outcome = probe(&target, HttpCheck::default().with_tls(true)).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::Timeout));
    assert_eq!(message(&outcome), "timed out after 300 ms");
}

#[tokio::test]
async fn refused_is_refused() {
    let t = RefusingTarget::new().unwrap();
    let target = Target::new("web", "node-1", t.addr().ip(), t.addr().port());
    let outcome = probe(&target, HttpCheck::default()).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::Refused));
    assert_eq!(message(&outcome), "connection refused");
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate_is_up() {
    let server = Server::start_tls(Reply::Bytes(response(200, "OK"))).await;
    let outcome = probe(&server.target(), HttpCheck::default().with_tls(true)).await;
    assert!(outcome.up, "{outcome:?}");
    let seen = server.seen();
    // No SNI for an IP address; the Host header carries it.
    assert_eq!(seen[0].sni, None);
    let port = server.addr.port();
    assert_eq!(
        seen[0].header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

#[tokio::test]
async fn tls_sends_the_configured_host_as_sni() {
    let server = Server::start_tls(Reply::Bytes(response(503, "Unavailable"))).await;
    let check = HttpCheck::default()
        .with_tls(true)
        .with_host("redis-proxy.example.com")
        .unwrap();
    let outcome = probe(&server.target(), check).await;
    assert_eq!(message(&outcome), "HTTP 503, expected 200");
    let seen = server.seen();
    assert_eq!(seen[0].sni.as_deref(), Some("redis-proxy.example.com"));
}

#[tokio::test]
async fn tls_to_a_plain_http_server_says_so() {
    let server = Server::start(Reply::Bytes(response(200, "OK"))).await;
    let outcome = probe(&server.target(), HttpCheck::default().with_tls(true)).await;
    assert!(!outcome.up);
    assert_eq!(
        outcome.failure_kind(),
        Some(FailureKind::Other),
        "{outcome:?}"
    );
    let message = message(&outcome);
    assert!(message.starts_with("TLS handshake failed"), "{message}");
    assert!(message.contains("set `tls: false`"), "{message}");
}

#[tokio::test]
async fn plain_http_to_a_tls_server_says_so() {
    let server = Server::start_tls(Reply::Bytes(response(200, "OK"))).await;
    let outcome = probe(&server.target(), HttpCheck::default()).await;
    assert!(!outcome.up);
    // The TLS server's alert is not an HTTP response: a wrong answer, at once.
    assert_eq!(
        outcome.failure_kind(),
        Some(FailureKind::UnexpectedReply),
        "{outcome:?}"
    );
    let message = message(&outcome);
    assert!(message.starts_with("not an HTTP/1 response"), "{message}");
    assert!(message.contains("set `tls: true`"), "{message}");
}

#[tokio::test]
async fn ipv6_host_header_has_brackets() {
    let Ok(server) = Server::start_at("[::1]:0", Reply::Bytes(response(200, "OK")), None).await
    else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    assert!(probe(&server.target(), HttpCheck::default()).await.up);
    let port = server.addr.port();
    assert_eq!(
        server.seen()[0].header("host"),
        Some(format!("[::1]:{port}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_all_mixes_http_and_tcp() {
    let ok = Server::start(Reply::Bytes(response(200, "OK"))).await;
    let failing = Server::start(Reply::Bytes(response(500, "Internal Server Error"))).await;
    let tls = Server::start_tls(Reply::Bytes(response(200, "OK"))).await;
    let silent = Server::start(Reply::Silence).await;
    let refused = RefusingTarget::new().unwrap();
    let tcp = AcceptingTarget::start().await.unwrap();

    let plain = Arc::new(http(HttpCheck::new("/healthz").unwrap()));
    let https = Arc::new(http(HttpCheck::new("/healthz").unwrap().with_tls(true)));
    let target = |name: &str, addr: SocketAddr| Target::new("web", name, addr.ip(), addr.port());
    let items = vec![
        (ok.target(), Arc::clone(&plain)),
        (target("failing", failing.addr), Arc::clone(&plain)),
        (target("tls", tls.addr), Arc::clone(&https)),
        (target("silent", silent.addr), Arc::clone(&plain)),
        (target("refused", refused.addr()), Arc::clone(&plain)),
        (target("tcp", tcp.addr()), Arc::new(Check::tcp())),
    ];
    let started = Instant::now();
    let outcomes = prober().probe_all(&items).await;
    assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());

    let kinds: Vec<_> = outcomes.iter().map(ProbeOutcome::failure_kind).collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(FailureKind::UnexpectedReply),
            None,
            Some(FailureKind::Timeout),
            Some(FailureKind::Refused),
            None,
        ],
        "{outcomes:?}"
    );
    assert_eq!(message(&outcomes[1]), "HTTP 500, expected 200");
}

#[test]
fn check_defaults_and_validation() {
    let d = HttpCheck::default();
    assert_eq!(
        (d.path.as_str(), d.expect_status.as_slice(), d.tls),
        ("/", &[200][..], false)
    );
    assert_eq!(HttpCheck::new("/").unwrap(), d);
    assert!(HttpCheck::new("/status?full=1").is_ok());
    for bad in ["", "healthz", "/a b", "/a#frag", "/\n"] {
        assert!(HttpCheck::new(bad).is_err(), "{bad:?}");
    }
    assert!(d.clone().with_expect_status([99]).is_err());
    assert!(d.clone().with_expect_status([600]).is_err());
    assert!(d.clone().with_expect_status([204, 301]).is_ok());
    for good in ["example.com", "localhost", "10.0.0.1", "::1"] {
        assert!(d.clone().with_host(good).is_ok(), "{good}");
    }
    for bad in ["", "example.com:8080", "http://example.com", "a b", "[::1]"] {
        assert!(d.clone().with_host(bad).is_err(), "{bad:?}");
    }
    let mut by_hand = d;
    by_hand.path = "nope".into();
    assert!(by_hand.validate().is_err());
}

#[test]
fn status_matching() {
    let d = HttpCheck::default();
    assert!(d.status_matches(200) && !d.status_matches(204));
    let any_2xx = HttpCheck::default().with_expect_status(Vec::new()).unwrap();
    assert!(any_2xx.status_matches(200) && any_2xx.status_matches(299));
    assert!(!any_2xx.status_matches(199) && !any_2xx.status_matches(300));
}
