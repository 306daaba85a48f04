//! The HTTP(S) client shared by the webhooks and the Kuberhealthy report: one POST with a
//! timeout, a retry policy, and URLs made safe to log.
//!
//! TLS comes from [`probe_core::tls`] (rustls with the `ring` provider, the public web roots).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use probe_core::backoff::{Backoff, Jitter, RetryPolicy as BackoffPolicy};
use probe_core::tls::{self, PoolOptions, Verify};

/// The pooled client.
pub(crate) type HttpClient = tls::HttpsClient;

/// Largest response body read (DingTalk's reply is a few dozen bytes).
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The `User-Agent` of every request.
pub(crate) const USER_AGENT_VALUE: &str = concat!("epcheck/", env!("CARGO_PKG_VERSION"));

/// How a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Pause after the first failed attempt; doubled after each further one, each pause drawn
    /// between half and all of it (jitter).
    pub first_backoff: Duration,
    /// Timeout of one attempt: connect, request and response body.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, pauses of about 0.5, 1 and 2 s, 5 s per attempt.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based), with jitter: probe-core's
    /// [`Backoff`] with equal jitter, doubling `first_backoff` at most 16 times.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(BackoffPolicy {
            max_attempts: self.attempts,
            base_delay: self.first_backoff,
            max_delay: self.first_backoff.saturating_mul(1 << 16),
            max_retry_after: Duration::ZERO,
            jitter: Jitter::Equal,
        })
        .delay(attempt.saturating_sub(1))
    }
}

/// A reply: status and (capped) body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why one attempt got no reply.
#[derive(Debug)]
pub(crate) enum PostError {
    /// The connection could not be made (nothing was sent): always safe to retry.
    Connect(String),
    /// No complete reply within the timeout (the request may have arrived).
    Timeout(Duration),
    /// Anything else (the connection broke mid-request, a bad URL).
    Other(String),
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostError::Connect(e) => write!(f, "cannot connect: {e}"),
            PostError::Timeout(t) => write!(f, "no reply within {} ms", t.as_millis()),
            PostError::Other(e) => f.write_str(e),
        }
    }
}

/// What a reply or error means for retrying.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Builds the client: HTTP/1.1, `http://` and `https://` (web roots), connect timeout `connect`.
pub(crate) fn client(connect: Duration) -> Result<HttpClient, probe_core::Error> {
    let tls = tls::client_config(&Verify::WebPki)?;
    Ok(tls::https_client(tls, &PoolOptions::new(connect)))
}

/// POSTs `body` as JSON to `uri` with `headers`, bounded by `timeout` as a whole.
pub(crate) async fn post_json(
    client: &HttpClient,
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, PostError> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, USER_AGENT_VALUE);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| PostError::Other(format!("cannot build the request: {e}")))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let text = error_chain(&e);
            if e.is_connect() {
                PostError::Connect(text)
            } else {
                PostError::Other(text)
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(Reply { status, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(PostError::Timeout(timeout)))
}

/// An error and its causes, `: `-separated, without repeats.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// `uri` without user info and query: `scheme://host[:port]/path`, safe to log (a webhook URL's
/// query often holds an access token).
pub fn redact(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("?");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// Moves user info out of `uri` into an `Authorization: Basic` header (marked sensitive).
///
/// hyper ignores user info in a URL, and its connection pool would print it in trace logs; sent
/// as a header it works and stays out of every log.
pub(crate) fn split_userinfo(uri: Uri) -> Result<(Uri, Option<HeaderValue>), String> {
    let Some((userinfo, hostport)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@'))
    else {
        return Ok((uri, None));
    };
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(userinfo)))
        .map_err(|_| "has user info that cannot be sent".to_owned())?;
    value.set_sensitive(true);
    let hostport = hostport.to_owned();
    let mut parts = uri.into_parts();
    parts.authority = Some(
        hostport
            .parse()
            .map_err(|_| "has an invalid host".to_owned())?,
    );
    let uri = Uri::from_parts(parts).map_err(|_| "has an invalid host".to_owned())?;
    Ok((uri, Some(value)))
}

/// Parses a webhook or report URL: `http://` or `https://` with a host.
pub(crate) fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a valid URL ({e})"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn redact_drops_query_and_userinfo() {
        let u: Uri = "https://user:pw@oapi.dingtalk.com/robot/send?access_token=SECRET"
            .parse()
            .unwrap();
        assert_eq!(redact(&u), "https://oapi.dingtalk.com/robot/send");
        let u: Uri = "http://[::1]:8080/hook?x=1".parse().unwrap();
        assert_eq!(redact(&u), "http://[::1]:8080/hook");
    }

    #[test]
    fn userinfo_becomes_a_sensitive_header() {
        let u: Uri = "http://user:pw@127.0.0.1:8080/hook?t=1".parse().unwrap();
        let (u, auth) = split_userinfo(u).unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/hook?t=1");
        let auth = auth.unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().unwrap(), "Basic dXNlcjpwdw==");
        let plain: Uri = "https://example.com/x".parse().unwrap();
        assert_eq!(split_userinfo(plain).unwrap().1, None);
    }

    #[test]
    fn urls_are_checked() {
        assert!(parse_url("https://example.com/x").is_ok());
        assert!(
            parse_url("ftp://example.com/")
                .unwrap_err()
                .contains("http://")
        );
        assert!(parse_url("/just/a/path").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let p = RetryPolicy::default();
        for (attempt, full) in [(1, 500), (2, 1000), (3, 2000)] {
            let d = p.backoff(attempt).as_millis();
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms");
        }
    }

    #[test]
    fn retry_classes() {
        assert!(retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable_status(StatusCode::BAD_REQUEST));
        assert!(!retryable_status(StatusCode::OK));
    }

    #[tokio::test]
    async fn client_builds_with_ring() {
        client(Duration::from_secs(1)).unwrap();
    }
}
