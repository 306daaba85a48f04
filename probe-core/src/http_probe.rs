//! The HTTP probe: connect, TLS if asked, `GET path`, read the status, close with a reset.
//!
//! One connection per probe, driven by hyper's low-level HTTP/1 client
//! ([`hyper::client::conn::http1`]) in the probe's own future: no pool, no spawned task, no
//! keep-alive. Only the response head is read; the body is dropped unread together with the
//! connection, and the socket closes with a reset (`SO_LINGER` 0) for the reason the TCP probe
//! gives (no `TIME_WAIT` per probe).
//!
//! The TLS client configuration is built once per process: with certificate verification off (see
//! [`HttpCheck`]) it is the same for every check, and building it per probe would cost an
//! allocation of the provider's tables and a fresh session cache each time.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, Either};
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::check::HttpCheck;
use crate::error::{Error, Result};
use crate::outcome::{FailureKind, ProbeError, ProbeOutcome};
use crate::target::Target;
use crate::tls::{self, Verify};

/// Sent as `User-Agent`, so that backends can tell health checks apart in their access logs.
const USER_AGENT_VALUE: &str = concat!("epcheck/", env!("CARGO_PKG_VERSION"));

/// Largest response head (status line and headers) read before giving up; hyper's minimum is
/// 8 KiB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How far a probe got, so that a timeout can say what it was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Connect,
    TlsHandshake,
    Response,
}

/// Checks an [`HttpCheck::path`]: absolute, no fragment, valid in a request line.
pub(crate) fn check_path(path: &str) -> Result<()> {
    let problem = if !path.starts_with('/') {
        Some("must start with '/'")
    } else if path.contains('#') {
        Some("must not contain a fragment ('#'); fragments are never sent to the server")
    } else if path.parse::<http::uri::PathAndQuery>().is_err() {
        Some("has characters not allowed in a request line; percent-encode them")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::InvalidCheck(format!(
            "http check `path` {path:?} {problem}"
        ))),
        None => Ok(()),
    }
}

/// Checks an [`HttpCheck::host`]: a DNS name or an IP address, no port.
pub(crate) fn check_host(host: &str) -> Result<()> {
    if rustls_pki_types::ServerName::try_from(host).is_err() {
        return Err(Error::InvalidCheck(format!(
            "http check `host` {host:?} is neither a DNS name nor an IP address \
             (give the name without scheme or port)"
        )));
    }
    Ok(())
}

/// Probes `target` with `check`; the whole probe (connect, TLS, response head) is bounded by
/// `timeout`.
pub(crate) async fn probe(target: &Target, check: &HttpCheck, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let mut stage = Stage::Connect;
    let result = tokio::time::timeout(timeout, exchange(target, check, &mut stage)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(())) => ProbeOutcome::up(latency),
        Ok(Err(error)) => ProbeOutcome::down(latency, error),
        Err(_elapsed) => ProbeOutcome::down(latency, timeout_error(stage, timeout)),
    }
}

fn timeout_error(stage: Stage, timeout: Duration) -> ProbeError {
    let ms = timeout.as_millis();
    match stage {
        Stage::Connect => ProbeError::timeout(timeout),
        Stage::TlsHandshake => ProbeError::new(
            FailureKind::Timeout,
            format!("timed out after {ms} ms during the TLS handshake"),
        ),
        Stage::Response => ProbeError::new(
            FailureKind::Timeout,
            format!("timed out after {ms} ms waiting for the HTTP response"),
        ),
    }
}

/// Connects, sends the request and checks the status. `stage` is updated as the probe goes.
async fn exchange(target: &Target, check: &HttpCheck, stage: &mut Stage) -> Result<(), ProbeError> {
    // Built first: a check with a bad field fails without sending anything.
    let request = request(target, check)?;
    let stream = TcpStream::connect(target.addr())
        .await
        .map_err(|e| ProbeError::from_connect(&e))?;
    // Failing to set the option only costs a TIME_WAIT entry, never the probe's result.
    let _ = stream.set_zero_linger();

    let status = if check.tls {
        *stage = Stage::TlsHandshake;
        let connector = TLS.as_ref().map_err(|e| {
            ProbeError::new(FailureKind::Other, format!("TLS client setup failed: {e}"))
        })?;
        let tls = connector
            .connect(server_name(target, check)?, stream)
            .await
            .map_err(|e| tls_error(&e))?;
        *stage = Stage::Response;
        send(tls, request).await?
    } else {
        *stage = Stage::Response;
        send(stream, request).await?
    };

    if check.status_matches(status.as_u16()) {
        Ok(())
    } else {
        Err(unexpected_status(status, check))
    }
}

/// `GET path` with `Host`, `User-Agent` and `Connection: close`.
fn request(target: &Target, check: &HttpCheck) -> Result<Request<Empty<Bytes>>, ProbeError> {
    Request::get(check.path.as_str())
        .header(HOST, host_header(target, check)?)
        .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
        .header(CONNECTION, HeaderValue::from_static("close"))
        .body(Empty::new())
        .map_err(|e| {
            ProbeError::new(
                FailureKind::Other,
                format!("invalid HTTP request for path {:?}: {e}", check.path),
            )
        })
}

/// The configured host, or the target's IP; IPv6 in brackets; `:port` unless it is the scheme's
/// default.
fn host_header(target: &Target, check: &HttpCheck) -> Result<HeaderValue, ProbeError> {
    let mut host = String::with_capacity(48);
    match check.host.as_deref() {
        Some(name) if name.parse::<Ipv6Addr>().is_ok() => {
            let _ = write!(host, "[{name}]");
        }
        Some(name) => host.push_str(name),
        None => match target.ip {
            IpAddr::V4(ip) => {
                let _ = write!(host, "{ip}");
            }
            IpAddr::V6(ip) => {
                let _ = write!(host, "[{ip}]");
            }
        },
    }
    let default_port = if check.tls { 443 } else { 80 };
    if target.port != default_port {
        let _ = write!(host, ":{}", target.port);
    }
    HeaderValue::try_from(host).map_err(|_| {
        ProbeError::new(
            FailureKind::Other,
            format!(
                "http check `host` {:?} is not a valid Host header",
                check.host
            ),
        )
    })
}

/// The TLS server name: the configured host (sent as SNI), or the target's IP (no SNI).
fn server_name(target: &Target, check: &HttpCheck) -> Result<ServerName<'static>, ProbeError> {
    match &check.host {
        Some(host) => ServerName::try_from(host.clone()).map_err(|_| {
            ProbeError::new(
                FailureKind::Other,
                format!("http check `host` {host:?} is not a valid TLS server name"),
            )
        }),
        None => Ok(ServerName::IpAddress(target.ip.into())),
    }
}

/// Sends `request` on `io` and returns the response status, without reading the body.
async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<StatusCode, ProbeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| http_error(&e))?;
    // The connection is driven here rather than spawned: the probe owns it, and dropping the
    // probe (or returning) drops the socket, with a reset.
    let response = pin!(sender.send_request(request));
    let conn = pin!(conn);
    let result = match future::select(response, conn).await {
        Either::Left((result, _conn)) => result,
        // The connection ended first (the server answered and closed, or it failed): the response,
        // or the error that ended the connection, is already waiting for the request.
        Either::Right((conn_result, response)) => match (response.await, conn_result) {
            (Err(e), Err(conn_error)) if e.is_canceled() => Err(conn_error),
            (result, _) => result,
        },
    };
    // The body is dropped unread with the response.
    result.map(|r| r.status()).map_err(|e| http_error(&e))
}

fn unexpected_status(status: StatusCode, check: &HttpCheck) -> ProbeError {
    let mut message = format!("HTTP {}, expected ", status.as_u16());
    match check.expect_status.as_slice() {
        [] => message.push_str("2xx"),
        [only] => {
            let _ = write!(message, "{only}");
        }
        many => {
            message.push_str("one of ");
            for (i, s) in many.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(message, "{sep}{s}");
            }
        }
    }
    ProbeError::new(FailureKind::UnexpectedReply, message)
}

/// A failed TLS handshake, with a hint for the usual cause.
fn tls_error(e: &std::io::Error) -> ProbeError {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match rustls_error {
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => format!(
            "TLS handshake failed: {e}: the server did not answer with TLS; \
             if the port serves plain HTTP, set `tls: false`"
        ),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "TLS handshake failed: the server closed the connection".to_owned()
        }
        _ => format!("TLS handshake failed: {}", chain(e)),
    };
    ProbeError::new(FailureKind::Other, message)
}

/// A failed HTTP exchange: a response that is not HTTP/1 is a wrong answer, anything else (reset,
/// closed without a response) is `Other`.
fn http_error(e: &hyper::Error) -> ProbeError {
    if e.is_parse() {
        ProbeError::new(
            FailureKind::UnexpectedReply,
            format!(
                "not an HTTP/1 response: {}; if the port speaks HTTPS, set `tls: true`",
                chain(e)
            ),
        )
    } else if e.is_incomplete_message() {
        ProbeError::new(
            FailureKind::Other,
            "connection closed before a complete HTTP response",
        )
    } else {
        ProbeError::new(
            FailureKind::Other,
            format!("HTTP request failed: {}", chain(e)),
        )
    }
}

/// An error and its sources, joined with `": "`.
fn chain(e: &dyn StdError) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // io::Error wrapping a custom error repeats the inner message; say it once.
        if !s.ends_with(&text) {
            let _ = write!(s, ": {text}");
        }
        source = cause.source();
    }
    s
}

/// The one TLS client configuration of HTTPS probes: [`Verify::Insecure`] (see [`HttpCheck`]
/// for why), ALPN `http/1.1`. Built on the first HTTPS probe.
static TLS: LazyLock<Result<TlsConnector, String>> = LazyLock::new(tls_connector);

fn tls_connector() -> Result<TlsConnector, String> {
    let mut config = tls::client_config(&Verify::Insecure).map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn target(ip: &str, port: u16) -> Target {
        Target::new("svc", "n", ip.parse().unwrap(), port)
    }

    #[test]
    fn host_header_omits_default_ports_and_brackets_ipv6() {
        let plain = HttpCheck::default();
        let tls = HttpCheck::default().with_tls(true);
        let named = HttpCheck::default().with_host("api.example.com").unwrap();
        let v6_name = HttpCheck::default().with_host("::1").unwrap();
        let cases = [
            (&plain, target("10.0.0.1", 80), "10.0.0.1"),
            (&plain, target("10.0.0.1", 8080), "10.0.0.1:8080"),
            (&plain, target("10.0.0.1", 443), "10.0.0.1:443"),
            (&tls, target("10.0.0.1", 443), "10.0.0.1"),
            (&plain, target("2001:db8::1", 80), "[2001:db8::1]"),
            (&plain, target("2001:db8::1", 81), "[2001:db8::1]:81"),
            (&named, target("10.0.0.1", 8443), "api.example.com:8443"),
            (&v6_name, target("10.0.0.1", 80), "[::1]"),
        ];
        for (check, t, want) in cases {
            assert_eq!(host_header(&t, check).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn server_name_is_host_or_ip() {
        let t = target("10.0.0.1", 443);
        let by_ip = server_name(&t, &HttpCheck::default()).unwrap();
        assert!(matches!(by_ip, ServerName::IpAddress(_)));
        let named = HttpCheck::default().with_host("api.example.com").unwrap();
        assert!(matches!(
            server_name(&t, &named).unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn unexpected_status_messages() {
        let msg = |statuses: &[u16]| {
            let check = HttpCheck::default()
                .with_expect_status(statuses.to_vec())
                .unwrap();
            let e = unexpected_status(StatusCode::SERVICE_UNAVAILABLE, &check);
            assert_eq!(e.kind, FailureKind::UnexpectedReply);
            e.message
        };
        assert_eq!(msg(&[200]), "HTTP 503, expected 200");
        assert_eq!(msg(&[]), "HTTP 503, expected 2xx");
        assert_eq!(msg(&[200, 204]), "HTTP 503, expected one of 200, 204");
    }

    #[test]
    fn timeout_messages_name_the_stage() {
        let t = Duration::from_millis(300);
        assert_eq!(
            timeout_error(Stage::Connect, t).message,
            "timed out after 300 ms"
        );
        assert!(
            timeout_error(Stage::TlsHandshake, t)
                .message
                .contains("TLS handshake")
        );
        assert!(
            timeout_error(Stage::Response, t)
                .message
                .contains("HTTP response")
        );
    }

    #[test]
    fn bad_path_set_by_hand_fails_without_panicking() {
        let check = HttpCheck {
            path: "no slash and spaces".into(),
            ..HttpCheck::default()
        };
        let e = request(&target("127.0.0.1", 80), &check).unwrap_err();
        assert_eq!(e.kind, FailureKind::Other);
    }

    #[test]
    fn tls_config_builds_with_ring() {
        assert!(TLS.is_ok());
        assert!(USER_AGENT_VALUE.starts_with("epcheck/"));
    }
}
