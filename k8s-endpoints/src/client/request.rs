//! One request to the ApiServer, from headers to a checked response: credentials refreshed
//! when due, the timeout, the size cap, `Warning` headers, the observer, and the retries
//! (`401` once after re-reading the token; `429`, `5xx` and transport failures with backoff).

use std::error::Error as StdError;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::time::Instant;

use super::error::{ApiError, ApiErrorKind, TransportKind};
use super::retry::{Backoff, RetryDecision, classify};
use super::tls::{self, HttpClient};
use super::{Client, TokenSource};
use crate::error::Error;

/// What a request does, in RBAC terms, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct Action {
    /// The RBAC verb: `get`, `update`, `create`.
    pub verb: &'static str,
    /// The resource: `endpoints`, `services`, or a non-resource path.
    pub resource: &'static str,
    /// The namespace, if any.
    pub namespace: Option<String>,
    /// The object name, if any.
    pub name: Option<String>,
}

/// A request to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    /// The path under the base URL, starting with `/`.
    pub path: String,
    /// The body, already encoded in the client's content type.
    pub body: Option<Vec<u8>>,
    pub action: Action,
}

/// A `2xx` response.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    /// Refreshes the token and CA when due (rebuilding the pool for a new CA), and returns
    /// the `Authorization` header and the pooled client to use.
    pub(crate) fn credentials_and_http(
        &self,
        now: Instant,
    ) -> (Option<http::HeaderValue>, HttpClient) {
        let inner = &self.inner;
        let (header, trust) = {
            let mut creds = inner
                .creds
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let trust = creds.refresh_if_due(now);
            (creds.header(), trust)
        };
        if let Some(trust) = trust {
            match tls::client_tls_config(&trust) {
                Ok(cfg) => {
                    let fresh = tls::http_client(cfg, inner.connect_timeout);
                    *inner
                        .http
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot use the new CA; keeping the current one");
                }
            }
        }
        let http = inner
            .http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (header, http)
    }

    /// Sends a request with the retries of the module docs; `Ok` only for `2xx`.
    pub(crate) async fn execute(&self, req: &Request) -> Result<Response, Error> {
        let mut backoff = Backoff::new(self.retry.unwrap_or(self.inner.retry));
        let mut reauthenticated = false;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match self.attempt(req).await {
                Ok(resp) => return Ok(resp),
                Err(err) => err,
            };
            match classify(&err) {
                RetryDecision::Reauthenticate if !reauthenticated && self.token_from_file() => {
                    reauthenticated = true;
                    let changed = self
                        .inner
                        .creds
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .reread_token_now(Instant::now());
                    tracing::info!(
                        method = %req.method, path = %req.path, token_changed = changed,
                        "the ApiServer answered 401; re-read the token file, retrying once"
                    );
                    continue;
                }
                RetryDecision::Backoff { retry_after } => {
                    if let Some(delay) = backoff.next_delay(retry_after) {
                        tracing::warn!(
                            method = %req.method, path = %req.path, error = %err,
                            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            attempt = attempts,
                            "ApiServer request failed; retrying"
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
                _ => {}
            }
            return Err(self.finish_error(err, req, attempts, reauthenticated));
        }
    }

    fn token_from_file(&self) -> bool {
        let creds = self
            .inner
            .creds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(creds.source(), TokenSource::File { .. })
    }

    /// Sends the request once.
    async fn attempt(&self, req: &Request) -> Result<Response, Error> {
        let inner = &self.inner;
        let (auth, http) = self.credentials_and_http(Instant::now());
        let url = inner.base.join(&req.path);
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&url)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, inner.user_agent.clone());
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        let body = match &req.body {
            Some(body) => {
                builder = builder.header(header::CONTENT_TYPE, inner.content_type.mime());
                Full::new(Bytes::from(body.clone()))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| Error::ClientConfig {
            problem: format!("cannot build a request for {url}: {e}"),
        })?;

        let started = Instant::now();
        let limit = inner.max_response_bytes;
        let exchange = async {
            let resp = http.request(request).await.map_err(Failure::Send)?;
            let (parts, body) = resp.into_parts();
            let bytes = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| Failure::Body(parts.status, e))?
                .to_bytes();
            Ok::<_, Failure>((parts, bytes))
        };
        let outcome = tokio::time::timeout(inner.request_timeout, exchange).await;
        let elapsed = started.elapsed();
        let method = req.method.as_str();
        let result = match outcome {
            Err(_) => Err(self.transport(req, &url, TransportKind::Timeout, None)),
            Ok(Err(Failure::Send(e))) => {
                let kind = transport_kind(&e);
                Err(self.transport(req, &url, kind, Some(&e)))
            }
            Ok(Err(Failure::Body(status, e))) => {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    // The response came; report it as one.
                    if let Some(o) = &inner.observer {
                        o.on_request(method, Some(status.as_u16()), elapsed);
                    }
                    return Err(Error::InvalidResponse {
                        method: method.to_owned(),
                        url,
                        problem: format!("the response body is larger than {limit} bytes"),
                    });
                }
                let kind = transport_kind(e.as_ref());
                Err(self.transport(req, &url, kind, Some(e.as_ref())))
            }
            Ok(Ok((parts, bytes))) => Ok((parts, bytes)),
        };
        let code = result.as_ref().ok().map(|(p, _)| p.status.as_u16());
        if let Some(o) = &inner.observer {
            o.on_request(method, code, elapsed);
        }
        let (parts, body) = result?;
        tracing::debug!(
            method, path = %req.path, code = parts.status.as_u16(),
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "ApiServer request"
        );
        inner.warnings.observe(
            parts
                .headers
                .get_all(header::WARNING)
                .iter()
                .map(|v| v.as_bytes()),
            method,
            &req.path,
        );
        if parts.status.is_success() {
            return Ok(Response {
                status: parts.status,
                body,
            });
        }
        Err(api_error(req, parts.status.as_u16(), &parts.headers, &body))
    }

    fn transport(
        &self,
        req: &Request,
        url: &str,
        kind: TransportKind,
        source: Option<&(dyn StdError + 'static)>,
    ) -> Error {
        let inner = &self.inner;
        let creds = inner
            .creds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let server = &inner.base.host;
        let hint = match kind {
            TransportKind::Tls => match (creds.ca_file(), creds.insecure()) {
                (Some(ca), _) => match source.and_then(certificate_problem) {
                    Some(CertProblem::UnknownIssuer) => format!(
                        "the certificate of {server} is signed by a CA that CA file {} does not hold; point ca_file at the cluster's CA",
                        ca.display()
                    ),
                    Some(CertProblem::Expired) => format!(
                        "the certificate of {server} has expired (or this machine's clock is wrong)"
                    ),
                    Some(CertProblem::NotYetValid) => format!(
                        "the certificate of {server} is not valid yet (check this machine's clock)"
                    ),
                    Some(CertProblem::WrongName) => format!(
                        "the certificate of {server} is not valid for that host name or IP; use a URL whose host the certificate names"
                    ),
                    None => format!(
                        "check that CA file {} holds the CA that signed the certificate of {server}, and that the certificate is valid for that host name or IP",
                        ca.display()
                    ),
                },
                (None, false) => format!(
                    "no CA file is configured, so the certificate of {server} was checked against the public web roots; set ca_file to the cluster's CA"
                ),
                (None, true) => format!("the TLS connection to {server} itself failed"),
            },
            TransportKind::ConnectionRefused => {
                format!(
                    "nothing accepts connections at {server}; check the ApiServer URL and that the ApiServer is up"
                )
            }
            TransportKind::ConnectTimeout => format!(
                "no connection to {server} within {:?}; check the URL, routes and firewalls",
                inner.connect_timeout
            ),
            TransportKind::Timeout => format!(
                "the request took longer than {:?}; the ApiServer may be overloaded",
                inner.request_timeout
            ),
            TransportKind::ConnectionDropped => {
                "the ApiServer or a proxy in front of it closed the connection".to_owned()
            }
            TransportKind::Dns => format!("check the host name in the ApiServer URL ({server})"),
            TransportKind::Other => String::new(),
        };
        let mut hint = hint;
        if let Some(secret) = creds.secret()
            && hint.contains(secret)
        {
            hint = hint.replace(secret, "[REDACTED]");
        }
        Error::Transport {
            method: req.method.to_string(),
            url: url.to_owned(),
            kind,
            hint,
            source: source.map(|e| root_cause(e).into()),
        }
    }

    /// Adds the attempt count and the operator's hint to a final error, and removes the
    /// token from anything the server sent.
    fn finish_error(
        &self,
        err: Error,
        req: &Request,
        attempts: u32,
        reauthenticated: bool,
    ) -> Error {
        let Error::Api(mut api) = err else {
            return err;
        };
        api.attempts = attempts;
        let creds = self
            .inner
            .creds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(secret) = creds.secret() {
            api.redact(secret);
        }
        let a = &req.action;
        let object = match (&a.name, &a.namespace) {
            (Some(n), Some(ns)) => format!("{} {n:?} in namespace {ns:?}", a.resource),
            (None, Some(ns)) => format!("{} in namespace {ns:?}", a.resource),
            (Some(n), None) => format!("{} {n:?}", a.resource),
            (None, None) => a.resource.to_owned(),
        };
        api.hint = match api.kind() {
            ApiErrorKind::Unauthorized => match (creds.source(), creds.token_path()) {
                (TokenSource::File { .. }, Some(path)) => format!(
                    "the ApiServer rejected the bearer token from {}{}; check that the file holds a valid, unexpired token for this cluster",
                    path.display(),
                    if reauthenticated {
                        ", also after re-reading the file and retrying once"
                    } else {
                        ""
                    }
                ),
                (TokenSource::None, _) => {
                    "no bearer token was sent; configure token_file".to_owned()
                }
                _ => "the ApiServer rejected the configured bearer token".to_owned(),
            },
            ApiErrorKind::Forbidden => format!(
                "epcheck's identity may not {} {object}; it needs, in that namespace, a Role with get, update and create (restricted by resourceNames to the Endpoints it manages) on endpoints and get on services, bound to its service account (`epcheck manifests` prints one)",
                a.verb
            ),
            ApiErrorKind::UnsupportedMediaType => format!(
                "the ApiServer does not accept {} bodies; set content_type to application/json",
                self.inner.content_type
            ),
            ApiErrorKind::Invalid | ApiErrorKind::BadRequest => {
                "the ApiServer refused the object; check endpoint_template, ports and the targets' IPs (loopback, link-local and multicast addresses are not allowed in Endpoints)".to_owned()
            }
            ApiErrorKind::TooManyRequests => {
                "the ApiServer is rate limiting; epcheck tries again on its next pass".to_owned()
            }
            ApiErrorKind::ServerError => {
                "the ApiServer (or a proxy in front of it) failed; epcheck tries again on its next pass".to_owned()
            }
            _ => String::new(),
        };
        Error::Api(api)
    }
}

/// Why an exchange failed below HTTP.
enum Failure {
    Send(hyper_util::client::legacy::Error),
    Body(StatusCode, Box<dyn StdError + Send + Sync>),
}

/// Builds the [`Error::Api`] of a non-`2xx` response.
fn api_error(req: &Request, code: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    Error::Api(Box::new(ApiError::from_response(
        req.method.as_str(),
        &req.path,
        code,
        headers,
        body,
    )))
}

/// Every error in a chain, looking inside `io::Error`s (whose `source()` skips the error
/// they wrap).
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        out.push(e);
        if out.len() > 32 {
            break;
        }
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    out
}

/// Classifies a failure from its cause chain.
pub(crate) fn transport_kind(err: &(dyn StdError + 'static)) -> TransportKind {
    let links = chain(err);
    if links.iter().any(|e| e.is::<rustls::Error>()) {
        return TransportKind::Tls;
    }
    for e in &links {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused => return TransportKind::ConnectionRefused,
                K::TimedOut => return TransportKind::ConnectTimeout,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return TransportKind::ConnectionDropped;
                }
                _ => {}
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return TransportKind::Timeout;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return TransportKind::ConnectionDropped;
            }
        }
        if e.to_string().starts_with("dns error") {
            return TransportKind::Dns;
        }
    }
    TransportKind::Other
}

/// The innermost error's text, as the `source` of a transport error: the part an operator
/// needs (`invalid peer certificate: UnknownIssuer`, `Connection refused (os error 111)`),
/// without hyper's wrappers.
/// Which certificate check failed in a TLS handshake, where rustls says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertProblem {
    UnknownIssuer,
    Expired,
    NotYetValid,
    WrongName,
}

fn certificate_problem(err: &(dyn StdError + 'static)) -> Option<CertProblem> {
    use rustls::CertificateError as C;
    chain(err)
        .into_iter()
        .find_map(|e| match e.downcast_ref::<rustls::Error>()? {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => Some(CertProblem::UnknownIssuer),
                C::Expired | C::ExpiredContext { .. } => Some(CertProblem::Expired),
                C::NotValidYet | C::NotValidYetContext { .. } => Some(CertProblem::NotYetValid),
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    Some(CertProblem::WrongName)
                }
                _ => None,
            },
            _ => None,
        })
}

fn root_cause(err: &(dyn StdError + 'static)) -> String {
    chain(err)
        .last()
        .map_or_else(|| err.to_string(), |e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_chains() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(transport_kind(&refused), TransportKind::ConnectionRefused);
        let wrapped = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(transport_kind(&wrapped), TransportKind::Tls);
        assert_eq!(
            certificate_problem(&wrapped),
            Some(CertProblem::UnknownIssuer)
        );
        let expired = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert_eq!(certificate_problem(&expired), Some(CertProblem::Expired));
        let name = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        );
        assert_eq!(certificate_problem(&name), Some(CertProblem::WrongName));
        assert_eq!(certificate_problem(&refused), None);
        assert_eq!(
            root_cause(&wrapped),
            "invalid peer certificate: UnknownIssuer"
        );
        let reset =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(transport_kind(&reset), TransportKind::ConnectionDropped);
        let other = std::io::Error::other("something");
        assert_eq!(transport_kind(&other), TransportKind::Other);
        let dns = std::io::Error::other("dns error: failed to lookup address information");
        assert_eq!(transport_kind(&dns), TransportKind::Dns);
    }
}
