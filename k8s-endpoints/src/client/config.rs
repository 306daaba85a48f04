//! How to reach the ApiServer: [`ClientConfig`], with named constructors for a URL and for
//! the in-cluster environment (SPEC §4).
//!
//! The environment is read through a function (`&dyn Fn(&str) -> Option<String>`), so tests
//! pass a closure and never touch the process environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use super::retry::RetryPolicy;
use crate::codec::ContentType;
use crate::error::Error;
use crate::path::PathTemplate;
use crate::token::{Token, TokenLocation};

/// The CA bundle the kubelet mounts into every pod.
pub const INCLUSTER_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The environment variable holding the ApiServer's in-cluster host.
pub const SERVICE_HOST_VAR: &str = "KUBERNETES_SERVICE_HOST";

/// The environment variable holding the ApiServer's in-cluster port.
pub const SERVICE_PORT_VAR: &str = "KUBERNETES_SERVICE_PORT";

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default timeout of one request, response body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the token and CA files are re-read by default (client-go re-reads about every
/// 50-60 s; projected tokens are refreshed at 80% of their lifetime).
pub const DEFAULT_REFRESH_PERIOD: Duration = Duration::from_secs(60);

/// The largest response body read (an Endpoints object of 1,000 addresses is about 100 KiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The `User-Agent` sent by default: `epcheck/<version>`.
pub fn default_user_agent() -> String {
    format!("epcheck/{}", env!("CARGO_PKG_VERSION"))
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token file, located by the `token_file` rules ([`TokenLocation`]) relative to
    /// `base_dir` (the working directory), re-read every
    /// [`refresh_period`](ClientConfig::refresh_period) and after a `401`.
    File {
        /// Which file(s) to try.
        location: TokenLocation,
        /// The directory relative paths are taken from.
        base_dir: PathBuf,
    },
    /// A fixed token (never re-read).
    Static(Token),
    /// No `Authorization` header (e.g. through `kubectl proxy`).
    None,
}

/// Everything the [`Client`](super::Client) needs to reach the ApiServer.
///
/// Build one with [`from_url`](Self::from_url) or [`incluster`](Self::incluster), then
/// adjust the public fields.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port` or `http://host:port`, optionally with a path prefix (e.g. a
    /// Rancher proxy's `/k8s/clusters/c-m-x1`). IPv6 hosts in brackets.
    pub base_url: String,
    /// Where the bearer token comes from.
    pub token: TokenSource,
    /// The PEM file of the CA(s) that sign the ApiServer's certificate, re-read every
    /// [`refresh_period`](Self::refresh_period). `None`: the public web roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. Only for a lab: anyone on the path can then read the
    /// token. A warning is logged when the client is built.
    pub insecure_skip_tls_verify: bool,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long one request may take, connection and response body included.
    pub request_timeout: Duration,
    /// How often the token and CA files are re-read.
    pub refresh_period: Duration,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The body format of writes (`content_type`).
    pub content_type: ContentType,
    /// The Endpoints path template (`endpointapi`).
    pub paths: PathTemplate,
    /// Retries of a single request on `429`, `5xx`, timeouts and dropped connections.
    pub retry: RetryPolicy,
    /// Re-reads after `409 Conflict` in [`reconcile`](super::reconcile()).
    pub conflict_retry: RetryPolicy,
    /// The largest response body accepted.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    /// A configuration for `base_url` with the defaults: the platform's token file, the
    /// in-cluster CA file when it exists, YAML bodies, the documented path template.
    pub fn from_url(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: TokenSource::File {
                location: TokenLocation::PlatformDefault,
                base_dir: PathBuf::from("."),
            },
            ca_file: default_ca_file(),
            insecure_skip_tls_verify: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            refresh_period: DEFAULT_REFRESH_PERIOD,
            user_agent: default_user_agent(),
            content_type: ContentType::default(),
            paths: PathTemplate::default(),
            retry: RetryPolicy::REQUEST,
            conflict_retry: RetryPolicy::CONFLICT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The in-cluster configuration: `https://` + `KUBERNETES_SERVICE_HOST` `:`
    /// `KUBERNETES_SERVICE_PORT` (an IPv6 host in brackets), the service-account token and
    /// CA. `env` looks up one variable (pass `|k| std::env::var(k).ok()`, or use
    /// [`incluster_env`](Self::incluster_env)).
    ///
    /// # Errors
    ///
    /// [`Error::ClientConfig`] when either variable is missing or empty.
    pub fn incluster(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (host, port) = (get(SERVICE_HOST_VAR), get(SERVICE_PORT_VAR));
        let (host, port) = match (host, port) {
            (Some(h), Some(p)) => (h, p),
            (h, p) => {
                let missing: Vec<&str> = [
                    (SERVICE_HOST_VAR, h.is_none()),
                    (SERVICE_PORT_VAR, p.is_none()),
                ]
                .into_iter()
                .filter_map(|(k, m)| m.then_some(k))
                .collect();
                return Err(Error::ClientConfig {
                    problem: format!(
                        "not running in a cluster: {} not set; set the ApiServer url in the config, or run epcheck in a pod",
                        missing.join(" and ")
                    ),
                });
            }
        };
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(Error::ClientConfig {
                problem: format!("{SERVICE_PORT_VAR}={port:?} is not a port number"),
            });
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self::from_url(format!("https://{host}:{port}")))
    }

    /// [`incluster`](Self::incluster) with the process environment.
    ///
    /// # Errors
    ///
    /// As [`incluster`](Self::incluster).
    pub fn incluster_env() -> Result<Self, Error> {
        Self::incluster(&|k| std::env::var(k).ok())
    }

    /// Checks the configuration: the URL and the numbers.
    ///
    /// # Errors
    ///
    /// [`Error::ClientConfig`] saying what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        BaseUrl::parse(&self.base_url)?;
        let fail = |problem: String| Err(Error::ClientConfig { problem });
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return fail("connect and request timeouts must be more than zero".into());
        }
        if self.refresh_period.is_zero() {
            return fail("the token refresh period must be more than zero".into());
        }
        if http::HeaderValue::from_str(&self.user_agent).is_err() {
            return fail(format!(
                "user agent {:?} is not a valid header value",
                self.user_agent
            ));
        }
        Ok(())
    }
}

/// [`INCLUSTER_CA_FILE`] when it exists.
pub fn default_ca_file() -> Option<PathBuf> {
    let path = Path::new(INCLUSTER_CA_FILE);
    path.exists().then(|| path.to_path_buf())
}

/// A checked base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    /// `https://host:port` plus the path prefix without a trailing `/`.
    pub root: String,
    /// Whether the scheme is `https`.
    pub https: bool,
    /// The host as written (IPv6 in brackets), for messages.
    pub host: String,
}

impl BaseUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let fail = |problem: &str| Error::ClientConfig {
            problem: format!("ApiServer URL {:?} {problem}", redact_url(url)),
        };
        let uri: Uri = url.trim().parse().map_err(|_| fail("is not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(fail("must start with https:// (or http:// for tests)")),
        };
        let authority = uri.authority().ok_or_else(|| fail("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(fail("must not carry credentials; use the token file"));
        }
        if authority.host().is_empty() {
            return Err(fail("has no host"));
        }
        if uri.query().is_some() {
            return Err(fail("must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/');
        Ok(Self {
            root: format!(
                "{}://{}{}",
                if https { "https" } else { "http" },
                authority,
                prefix
            ),
            https,
            host: authority.to_string(),
        })
    }

    pub(crate) fn join(&self, path: &str) -> String {
        format!("{}{}", self.root, path)
    }
}

/// `url` made safe to print: user info (`user:password@`) becomes `***@` and a query becomes
/// `?***`. Works on any text, valid URL or not, so an error about a malformed URL can quote it.
///
/// ```
/// use k8s_endpoints::client::redact_url;
/// assert_eq!(redact_url("https://admin:pw@10.0.0.1:6443"), "https://***@10.0.0.1:6443");
/// assert_eq!(redact_url("https://h/hook?access_token=t"), "https://h/hook?***");
/// assert_eq!(redact_url("https://10.0.0.1:6443"), "https://10.0.0.1:6443");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn incluster_ipv4() {
        let c = ClientConfig::incluster(&env(&[
            (SERVICE_HOST_VAR, "10.96.0.1"),
            (SERVICE_PORT_VAR, "443"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "https://10.96.0.1:443");
        assert!(matches!(
            c.token,
            TokenSource::File {
                location: TokenLocation::PlatformDefault,
                ..
            }
        ));
        c.validate().unwrap();
    }

    #[test]
    fn incluster_ipv6_gets_brackets() {
        let c = ClientConfig::incluster(&env(&[
            (SERVICE_HOST_VAR, "fd00:10:96::1"),
            (SERVICE_PORT_VAR, "6443"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "https://[fd00:10:96::1]:6443");
        c.validate().unwrap();
        let c = ClientConfig::incluster(&env(&[
            (SERVICE_HOST_VAR, "[::1]"),
            (SERVICE_PORT_VAR, "443"),
        ]))
        .unwrap();
        assert_eq!(c.base_url, "https://[::1]:443");
    }

    #[test]
    fn incluster_needs_both() {
        let msg = ClientConfig::incluster(&env(&[(SERVICE_HOST_VAR, "10.0.0.1")]))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("KUBERNETES_SERVICE_PORT not set"), "{msg}");
        let msg =
            ClientConfig::incluster(&env(&[(SERVICE_PORT_VAR, "443"), (SERVICE_HOST_VAR, " ")]))
                .unwrap_err()
                .to_string();
        assert!(msg.contains("KUBERNETES_SERVICE_HOST not set"), "{msg}");
        let msg = ClientConfig::incluster(&env(&[])).unwrap_err().to_string();
        assert!(
            msg.contains("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT not set"),
            "{msg}"
        );
        let msg = ClientConfig::incluster(&env(&[
            (SERVICE_HOST_VAR, "h"),
            (SERVICE_PORT_VAR, "https"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(msg.contains("not a port number"), "{msg}");
    }

    /// Issue 18: the refusal of a URL with credentials quoted the whole URL, password included.
    #[test]
    fn a_refused_url_is_quoted_without_credentials_or_query() {
        for url in [
            "https://admin:hunter2-pw@10.0.0.1:6443",
            "https://10.0.0.1:6443/?token=hunter2-pw",
            "ftp://admin:hunter2-pw@h",
        ] {
            let msg = match BaseUrl::parse(url) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{url} accepted"),
            };
            assert!(!msg.contains("hunter2-pw"), "{msg}");
            assert!(msg.contains("***"), "{msg}");
        }
        assert_eq!(redact_url("admin:pw@h:1/p"), "***@h:1/p");
        assert_eq!(redact_url("https://[::1]:6443"), "https://[::1]:6443");
    }

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("https://127.0.0.1:6443/").unwrap();
        assert_eq!(b.root, "https://127.0.0.1:6443");
        assert!(b.https);
        assert_eq!(b.join("/version"), "https://127.0.0.1:6443/version");
        let b = BaseUrl::parse("http://[::1]:8001/k8s/clusters/c-1/").unwrap();
        assert_eq!(b.root, "http://[::1]:8001/k8s/clusters/c-1");
        assert_eq!(b.host, "[::1]:8001");
        for bad in [
            "",
            "127.0.0.1:6443",
            "ftp://h",
            "https://",
            "https://u:p@h/",
            "https://h/?a=b",
            "not a url",
        ] {
            let e = BaseUrl::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid ApiServer client configuration: ApiServer URL"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = ClientConfig::from_url("http://127.0.0.1:1");
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.request_timeout, Duration::from_secs(10));
        assert_eq!(c.refresh_period, Duration::from_secs(60));
        assert!(c.user_agent.starts_with("epcheck/"));
        assert_eq!(c.content_type, ContentType::Yaml);
        c.validate().unwrap();
        let bad = ClientConfig {
            request_timeout: Duration::ZERO,
            ..c.clone()
        };
        assert!(bad.validate().is_err());
        let bad = ClientConfig {
            user_agent: "a\nb".into(),
            ..c
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn static_token_is_not_shown() {
        let mut c = ClientConfig::from_url("http://127.0.0.1:1");
        c.token = TokenSource::Static(Token::new("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
