//! The online half: a small, hand-written ApiServer client for `v1` Endpoints (SPEC §4, §5.3,
//! §5.5), built on hyper, hyper-util's pooled client, hyper-rustls and rustls (ring).
//!
//! * [`ClientConfig`] — base URL (or the in-cluster environment), token file, CA file,
//!   timeouts, content type, path template, retry bounds;
//! * [`Client`] — [`get_endpoints`](Client::get_endpoints),
//!   [`replace_endpoints`](Client::replace_endpoints),
//!   [`create_endpoints`](Client::create_endpoints) (a `PUT` to the named URL first, then
//!   `POST` to the collection), [`get_service`](Client::get_service) and
//!   [`server_version`](Client::server_version);
//! * [`reconcile()`] — one service: refuse a Service with a selector, read the Endpoints,
//!   compare by meaning, write only when different, re-read and retry on `409 Conflict`;
//! * [`ApiError`] and [`TransportKind`] — what went wrong, with the ApiServer's `Status`;
//! * [`classify`] and [`Backoff`] — which failures are retried and how long to wait.
//!
//! Every request sends `Accept: application/json`, `User-Agent: epcheck/<version>` and, unless
//! the config says otherwise, `Authorization: Bearer …` marked sensitive. Write bodies are
//! YAML or JSON as configured. Responses are read as JSON, at most 4 MiB. `429`, `5xx`,
//! timeouts and refused or dropped connections are retried a few times with jittered
//! exponential backoff (honouring `Retry-After`); a `401` re-reads the token file and retries
//! once. The token and CA files are re-read once a minute. The ApiServer's `Warning` headers
//! are logged once per distinct text.
//!
//! # Example
//!
//! ```no_run
//! use std::net::IpAddr;
//! use k8s_endpoints::client::{Client, ClientConfig, ReconcileMode, reconcile};
//! use k8s_endpoints::{Endpoints, NotReadyPolicy, Renderer, codec};
//!
//! # async fn run() -> Result<(), k8s_endpoints::Error> {
//! // In a pod: KUBERNETES_SERVICE_HOST/PORT, the service-account token and CA.
//! let client = Client::new(ClientConfig::incluster_env()?)?;
//!
//! let template: Endpoints = codec::from_yaml(
//!     "kind: Endpoints\napiVersion: v1\nsubsets:\n- ports: [{port: 6379, protocol: TCP}]\n",
//! )?;
//! let renderer = Renderer::new(&template, "default", "redis", None, NotReadyPolicy::Keep)?;
//! let ready: Vec<IpAddr> = vec!["198.51.100.10".parse().unwrap()];
//! let failing: Vec<IpAddr> = vec!["198.51.100.11".parse().unwrap()];
//!
//! let outcome = reconcile(&client, &renderer, &ready, &failing, ReconcileMode::Apply).await?;
//! println!("{}: {} ({})", renderer.name(), outcome.action, outcome.diff);
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

mod auth;
mod config;
mod endpoints;
mod error;
mod lease;
mod object_ref;
mod reconcile;
mod request;
mod retry;
mod service;
mod slices;
mod tls;
mod unconfigured;
mod version;
mod warning;

pub use auth::RefreshSchedule;
pub use config::{
    ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REFRESH_PERIOD,
    DEFAULT_REQUEST_TIMEOUT, INCLUSTER_CA_FILE, SERVICE_HOST_VAR, SERVICE_PORT_VAR, TokenSource,
    default_ca_file, default_user_agent, redact_url,
};
pub use error::{
    ApiError, ApiErrorKind, SNIPPET_CHARS, TransportKind, escape_control, parse_retry_after,
    parse_status, sanitize_snippet,
};
pub use lease::{LEASE_API_VERSION, LEASE_KIND, Lease, LeaseSpec};
pub use reconcile::{ReconcileAction, ReconcileMode, ReconcileOutcome, reconcile};
pub use retry::{Backoff, Jitter, RetryDecision, RetryPolicy, classify};
pub use service::{ServiceInfo, ServicePort};
pub use slices::{SlicesOutcome, reconcile_slices};
pub use tls::parse_ca_pem;
pub use unconfigured::{PruneAction, Unconfigured, UnconfiguredReport};
pub use version::VersionInfo;
pub use warning::parse_warning;

use crate::codec::ContentType;
use crate::error::Error;
use crate::path::PathTemplate;
use auth::Credentials;
use config::BaseUrl;
use tls::HttpClient;
use warning::WarningLog;

/// Told about every HTTP exchange with the ApiServer, so the daemon can export metrics
/// (`epcheck_apiserver_requests_total{verb,code}`, a duration histogram) without this crate
/// depending on a metrics library. Retries are reported one by one.
///
/// Closures `Fn(&str, Option<u16>, Duration)` implement it.
pub trait RequestObserver: Send + Sync {
    /// One request finished: its HTTP method (`GET`, `PUT`, `POST`), the status code, or
    /// `None` when no response arrived (timeout, refused, dropped, TLS), and how long it took.
    fn on_request(&self, verb: &str, code: Option<u16>, duration: Duration);
}

impl<F> RequestObserver for F
where
    F: Fn(&str, Option<u16>, Duration) + Send + Sync,
{
    fn on_request(&self, verb: &str, code: Option<u16>, duration: Duration) {
        self(verb, code, duration);
    }
}

/// The ApiServer client. Cheap to clone: clones share one connection pool, one token and
/// one set of logged warnings.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// This handle's retry policy for failed requests, when not the configured one.
    retry: Option<retry::RetryPolicy>,
}

struct Inner {
    base: BaseUrl,
    /// What comes before `/api/v1/...` in the path template (e.g. a proxy's prefix), so
    /// Services and `/version` are reached the same way as Endpoints.
    api_prefix: String,
    paths: PathTemplate,
    content_type: ContentType,
    user_agent: HeaderValue,
    connect_timeout: Duration,
    request_timeout: Duration,
    retry: retry::RetryPolicy,
    conflict_retry: retry::RetryPolicy,
    max_response_bytes: usize,
    http: RwLock<HttpClient>,
    creds: Mutex<Credentials>,
    warnings: WarningLog,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.root)
            .field("paths", &self.inner.paths.as_str())
            .field("content_type", &self.inner.content_type)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client: checks the configuration, reads the token and the CA file, and sets
    /// up the connection pool. No request is sent.
    ///
    /// # Errors
    ///
    /// [`Error::ClientConfig`] for a bad URL or values; the token errors of
    /// [`read_token`](crate::read_token); [`Error::CaFile`] when the CA file cannot be read
    /// or holds no certificate; [`Error::Tls`].
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        Self::build(config, None)
    }

    /// Like [`new`](Self::new), reporting every request to `observer`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_observer(
        config: ClientConfig,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Self, Error> {
        Self::build(config, Some(observer))
    }

    fn build(
        config: ClientConfig,
        observer: Option<Arc<dyn RequestObserver>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let base = BaseUrl::parse(&config.base_url)?;
        let user_agent =
            HeaderValue::from_str(&config.user_agent).map_err(|_| Error::ClientConfig {
                problem: format!(
                    "user agent {:?} is not a valid header value",
                    config.user_agent
                ),
            })?;
        let (creds, trust) = Credentials::load(&config, Instant::now())?;
        if !base.https && creds.header().is_some() {
            tracing::warn!(
                url = %base.root,
                "the ApiServer URL is plain http://: the bearer token is sent unencrypted"
            );
        }
        let http = tls::http_client(tls::client_tls_config(&trust)?, config.connect_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                api_prefix: api_prefix(&config.paths),
                base,
                paths: config.paths,
                content_type: config.content_type,
                user_agent,
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                retry: config.retry,
                conflict_retry: config.conflict_retry,
                max_response_bytes: config.max_response_bytes,
                http: RwLock::new(http),
                creds: Mutex::new(creds),
                warnings: WarningLog::default(),
                observer,
            }),
            retry: None,
        })
    }

    /// A handle on the same client (connections, credentials, warnings) whose failed requests
    /// are retried as `policy` says: a daemon that already knows the ApiServer is down tests
    /// it with one request at a time (`max_attempts: 1`), while other
    /// handles (a Lease renewal, say) keep their retries.
    #[must_use]
    pub fn with_request_retry(&self, policy: retry::RetryPolicy) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            retry: Some(policy),
        }
    }

    /// The base URL, with its path prefix and no trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base.root
    }

    /// The Endpoints path template.
    pub fn paths(&self) -> &PathTemplate {
        &self.inner.paths
    }

    /// The body format of writes.
    pub fn content_type(&self) -> ContentType {
        self.inner.content_type
    }

    /// The bounds of re-reads after `409 Conflict` in [`reconcile()`].
    pub fn conflict_retry(&self) -> RetryPolicy {
        self.inner.conflict_retry
    }

    /// Re-reads the token and CA files now if they are due, as every request does first.
    /// Useful for a daemon that is idle for long stretches.
    pub fn refresh_credentials(&self) {
        self.credentials_and_http(Instant::now());
    }
}

/// The part of the template before `/api/v1/namespaces/…/endpoints/…` (empty for the
/// documented template).
fn api_prefix(paths: &PathTemplate) -> String {
    const STANDARD: &str = "/api/v1/namespaces/n/endpoints/e";
    match paths.object_path("n", "e") {
        Ok(p) => p.strip_suffix(STANDARD).unwrap_or_default().to_owned(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(api_prefix(&PathTemplate::default()), "");
        let t = PathTemplate::parse(
            "/k8s/clusters/c-1/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints",
        )
        .unwrap();
        assert_eq!(api_prefix(&t), "/k8s/clusters/c-1");
        let odd = PathTemplate::parse("/x/myNameSpaces/myEndPoints").unwrap();
        assert_eq!(api_prefix(&odd), "");
    }

    #[test]
    fn closures_observe() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let obs: Arc<dyn RequestObserver> =
            Arc::new(move |v: &str, c: Option<u16>, _d: Duration| {
                s.lock().unwrap().push((v.to_owned(), c));
            });
        obs.on_request("GET", Some(200), Duration::ZERO);
        assert_eq!(seen.lock().unwrap()[0], ("GET".to_owned(), Some(200)));
    }

    #[tokio::test]
    async fn debug_shows_no_token() {
        let mut c = ClientConfig::from_url("http://127.0.0.1:1");
        c.ca_file = None;
        c.token = TokenSource::Static(crate::Token::new("s3cr3t"));
        let client = Client::new(c).unwrap();
        let dbg = format!("{client:?}");
        assert!(dbg.contains("127.0.0.1"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"));
    }
}
