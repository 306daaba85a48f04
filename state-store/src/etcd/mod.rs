//! The etcd store and lock, on etcd-client (the v3 gRPC API). etcd-client's names stay inside
//! this module.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::Client;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;

use crate::error::{BackendError, Error, Result};

mod lock;
mod options;
mod store;
mod views;

pub use lock::EtcdLock;
pub use options::{
    DEFAULT_COMMAND_TIMEOUT as DEFAULT_ETCD_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT as DEFAULT_ETCD_CONNECT_TIMEOUT,
    DEFAULT_EVENTS_MAX_LEN as DEFAULT_ETCD_EVENTS_MAX_LEN,
    DEFAULT_KEY_PREFIX as DEFAULT_ETCD_KEY_PREFIX, EtcdOptions,
    MAX_ENDPOINTS as MAX_ETCD_ENDPOINTS,
};
pub use views::EtcdViews;

/// Slack on top of the command timeout for the outer guard of every call.
const GUARD_SLACK: Duration = Duration::from_millis(250);
/// How often a repeated connection error is logged at `warn` by the background connector.
const LOG_REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The etcd implementation of [`StateStore`](crate::StateStore), and the maker of
/// [`EtcdLock`]s.
///
/// Cloning is cheap and shares the connection.
///
/// # Keys
/// With the default prefix `epcheck/` (SPEC §6: the Redis store's records under
/// `<prefix><svc>/…`):
/// - `epcheck/<svc>/targets/<name>` — one [`TargetRecord`](crate::TargetRecord) JSON per
///   target;
/// - `epcheck/<svc>/applied` — the [`AppliedRecord`](crate::AppliedRecord) JSON;
/// - `epcheck/_events/<at>-<random>` — one [`TransitionEvent`](crate::TransitionEvent) JSON
///   per transition, read in the order etcd created them; the oldest beyond `events_max_len`
///   are deleted after each append;
/// - `epcheck/_services/<svc>` — one empty key per service written;
/// - `epcheck/_lock/<name>` — the leader lock ([`EtcdLock`]), bound to an etcd lease;
/// - `epcheck/_views/<name>/view/<replica>` and `…/member/<replica>` — consensus views
///   ([`EtcdViews`]).
///
/// The `_` names cannot clash with a service: a Kubernetes Service name has no `_`.
///
/// # Connecting, timeouts and reconnection
/// - [`connect`](EtcdStore::connect) connects (and authenticates) within `connect_timeout`,
///   reads one key to prove it, and returns an error the caller can print: refused,
///   unreachable, TLS, wrong credentials.
/// - [`new_lazy`](EtcdStore::new_lazy) returns at once; without authentication the gRPC
///   channel connects on first use, with it a background task retries the authentication
///   (backoff from 100 ms doubling to `reconnect_max_delay`) until it succeeds. Meanwhile
///   calls fail at once with [`Error::EtcdUnavailable`].
/// - Once connected, the gRPC channel reconnects by itself; HTTP/2 pings every
///   `command_timeout` (at least 1 s) drop a connection that stopped answering. Every call is
///   bounded by `command_timeout`, so while etcd is down calls fail within it (at once when
///   the connection is refused) and the caller carries on from memory.
/// - The password is never logged and is scrubbed from errors.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// The endpoints, comma-separated, safe to log.
    display: String,
    password: Option<SecretString>,
    prefix: String,
    events_max_len: u64,
    command_timeout: Duration,
    /// `None` until the first connection (with authentication) succeeds.
    client: Mutex<Option<Client>>,
    /// Why the background connector has not connected yet.
    last_error: Mutex<Option<BackendError>>,
    connector: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self
            .connector
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.shared.display)
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects (authenticating when a user is set) within `connect_timeout` and proves it
    /// with one read; returns the error if that fails.
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore> {
        let resolved = options::resolve(&options)?;
        let store = EtcdStore::empty(&options, &resolved);
        let client = store
            .first_connection(&resolved, options.connect_timeout)
            .await?;
        store.shared.set_client(client);
        crate::StateStore::ping(&store).await?;
        Ok(store)
    }

    /// Returns at once and connects in the background, retrying forever, so the daemon can
    /// start while etcd is down. Fails only for invalid options.
    pub async fn new_lazy(options: EtcdOptions) -> Result<EtcdStore> {
        let resolved = options::resolve(&options)?;
        let store = EtcdStore::empty(&options, &resolved);
        let weak = Arc::downgrade(&store.shared);
        let (max_delay, timeout) = (
            options.reconnect_max_delay.max(Duration::from_millis(100)),
            options.connect_timeout,
        );
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            let mut last_logged: Option<(String, tokio::time::Instant)> = None;
            loop {
                let Some(shared) = weak.upgrade() else { return };
                let store = EtcdStore { shared };
                match store.first_connection(&resolved, timeout).await {
                    Ok(client) => {
                        if last_logged.is_some() {
                            tracing::info!(etcd = %store.shared.display, "connected to etcd");
                        }
                        store.shared.set_client(client);
                        store.shared.set_last_error(None);
                        return;
                    }
                    Err(e) => {
                        let text = e.to_string();
                        let repeat = last_logged
                            .as_ref()
                            .is_some_and(|(t, at)| *t == text && at.elapsed() < LOG_REPEAT_EVERY);
                        if !repeat {
                            tracing::warn!(etcd = %store.shared.display, error = %error_chain(&e),
                                "cannot connect to etcd yet; retrying in the background");
                            last_logged = Some((text, tokio::time::Instant::now()));
                        }
                        store.shared.set_last_error(Some(source_of(&e)));
                    }
                }
                drop(store);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max_delay);
            }
        });
        *store.shared.lock_connector() = Some(task);
        Ok(store)
    }

    fn empty(options: &EtcdOptions, resolved: &options::Resolved) -> EtcdStore {
        EtcdStore {
            shared: Arc::new(Shared {
                display: resolved.display.clone(),
                password: resolved.password.clone(),
                prefix: options.key_prefix.clone(),
                events_max_len: options.events_max_len.max(1),
                command_timeout: options.command_timeout,
                client: Mutex::new(None),
                last_error: Mutex::new(None),
                connector: Mutex::new(None),
            }),
        }
    }

    async fn first_connection(
        &self,
        resolved: &options::Resolved,
        timeout: Duration,
    ) -> Result<Client> {
        let connecting = Client::connect(&resolved.urls, Some(resolved.connect.clone()));
        // The client's own connect timeout covers each attempt; this bounds the whole
        // authentication round trip too.
        match tokio::time::timeout(timeout + self.shared.command_timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.classify("Authenticate", "-", &e)),
            Err(_) => Err(Error::EtcdUnavailable {
                endpoints: self.shared.display.clone(),
                op: "Connect",
                key: "-".into(),
                source: BackendError::new("Timeout", format!("no connection within {timeout:?}")),
            }),
        }
    }

    /// The endpoints, comma-separated, safe to log.
    pub fn endpoints(&self) -> &str {
        &self.shared.display
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The leader lock `<prefix>_lock/<name>` on this connection.
    pub fn lock(&self, name: &str) -> EtcdLock {
        EtcdLock::new(self.clone(), format!("{}_lock/{name}", self.shared.prefix))
    }

    /// The consensus views of group `name` on this connection (SPEC §9.1), under
    /// `<prefix>_views/<name>/`.
    pub fn views(&self, name: &str) -> EtcdViews {
        EtcdViews::new(self.clone(), name)
    }

    /// How many transitions the history holds now.
    pub async fn event_count(&self) -> Result<u64> {
        let prefix = self.events_prefix();
        let count = etcd_client::GetOptions::new()
            .with_prefix()
            .with_count_only();
        let reply = self
            .call("Range", &prefix, |mut c| {
                let k = prefix.clone();
                async move { c.get(k, Some(count)).await }
            })
            .await?;
        Ok(u64::try_from(reply.count()).unwrap_or(0))
    }

    fn targets_prefix(&self, service: &str) -> String {
        format!("{}{service}/targets/", self.shared.prefix)
    }

    fn applied_key(&self, service: &str) -> String {
        format!("{}{service}/applied", self.shared.prefix)
    }

    fn events_prefix(&self) -> String {
        format!("{}_events/", self.shared.prefix)
    }

    fn services_prefix(&self) -> String {
        format!("{}_services/", self.shared.prefix)
    }

    /// Runs one call on a clone of the client, bounded in time, and maps the client's error
    /// to ours. Before the first connection it fails at once.
    async fn call<T, F, Fut>(&self, op: &'static str, key: &str, call: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let Some(client) = self.shared.client() else {
            return Err(self.not_connected(op, key));
        };
        let guard = self.shared.command_timeout + GUARD_SLACK;
        match tokio::time::timeout(guard, call(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(op, key, &error)),
            Err(_) => Err(Error::EtcdUnavailable {
                endpoints: self.shared.display.clone(),
                op,
                key: key.to_owned(),
                source: BackendError::new(
                    "Timeout",
                    format!("no answer within {:?}", self.shared.command_timeout),
                ),
            }),
        }
    }

    fn not_connected(&self, op: &'static str, key: &str) -> Error {
        let endpoints = self.shared.display.clone();
        match self.shared.last_error() {
            Some(last) if last.kind() == "Unauthenticated" => Error::EtcdAuth {
                endpoints,
                source: last,
            },
            last => Error::EtcdUnavailable {
                endpoints,
                op,
                key: key.to_owned(),
                source: last.unwrap_or_else(|| {
                    BackendError::new("Connecting", "not connected yet; retrying")
                }),
            },
        }
    }

    /// Sorts a client error into unavailable (retry later), refused credentials, or a
    /// command error, with the password scrubbed.
    fn classify(&self, op: &'static str, key: &str, error: &etcd_client::Error) -> Error {
        let endpoints = self.shared.display.clone();
        let key = key.to_owned();
        let (source, class) = describe(error);
        let source = source.redacted(
            self.shared
                .password
                .as_ref()
                .map(ExposeSecret::expose_secret),
        );
        match class {
            Class::Auth => Error::EtcdAuth { endpoints, source },
            Class::Unavailable => Error::EtcdUnavailable {
                endpoints,
                op,
                key,
                source,
            },
            Class::Command => Error::EtcdCommand {
                endpoints,
                op,
                key,
                source,
            },
        }
    }
}

impl Shared {
    fn client(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_client(&self, client: Client) {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(client);
    }

    fn lock_connector(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn last_error(&self) -> Option<BackendError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, error: Option<BackendError>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}

enum Class {
    Unavailable,
    Auth,
    Command,
}

/// gRPC status codes (`tonic::Code` as `i32`), named here so that the crate does not depend on
/// tonic itself.
mod code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

fn describe(error: &etcd_client::Error) -> (BackendError, Class) {
    use etcd_client::Error as E;
    match error {
        E::GRpcStatus(status) => {
            let code = i32::from(status.code());
            let message = status.message().to_owned();
            let name = format!("{:?}", status.code());
            // etcd answers a wrong user or password with InvalidArgument.
            let auth = code == code::UNAUTHENTICATED
                || (code == code::INVALID_ARGUMENT && message.contains("authentication failed"));
            let class = if auth {
                Class::Auth
            } else if matches!(
                code,
                code::CANCELLED
                    | code::UNKNOWN
                    | code::DEADLINE_EXCEEDED
                    | code::RESOURCE_EXHAUSTED
                    | code::ABORTED
                    | code::UNAVAILABLE
            ) {
                Class::Unavailable
            } else {
                Class::Command
            };
            let kind = if auth { "Unauthenticated".into() } else { name };
            (BackendError::new(kind, message), class)
        }
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => (
            BackendError::new("Transport", error_chain(error)),
            Class::Unavailable,
        ),
        E::LeaseKeepAliveError(m) => (
            BackendError::new("LeaseKeepAlive", m.clone()),
            Class::Unavailable,
        ),
        other => (
            BackendError::new("Client", error_chain(other)),
            Class::Command,
        ),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The backend error under one of ours, for "why not connected yet".
fn source_of(error: &Error) -> BackendError {
    match error {
        Error::EtcdAuth { source, .. }
        | Error::EtcdUnavailable { source, .. }
        | Error::EtcdCommand { source, .. } => source.clone(),
        other => BackendError::new("Connect", other.to_string()),
    }
}

/// The text of a stored value; `None` (skipped with a warning by the caller) when not UTF-8.
fn text(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value).ok()
}
