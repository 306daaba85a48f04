//! The Redis store and lock, on fred. `fred::prelude::*` stays inside this module: its
//! `Client`, `Config`, `Error` and `Builder` would clash with other crates' names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fred::clients::WithOptions;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;
use fred::types::{ConnectHandle, Value};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast::error::RecvError;

use crate::error::{BackendError, Error, Result};

mod lock;
mod options;
mod store;
mod views;

pub use lock::RedisLock;
pub use options::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENTS_MAX_LEN, DEFAULT_KEY_PREFIX,
    DEFAULT_RECONNECT_MAX_DELAY, RedisOptions,
};
pub use views::RedisViews;

/// How often a repeated connection error is logged at `warn`.
const LOG_REPEAT_EVERY: Duration = Duration::from_secs(60);
/// Slack on top of fred's own command timeout for the outer guard.
const GUARD_SLACK: Duration = Duration::from_millis(250);

/// The Redis implementation of [`StateStore`](crate::StateStore).
///
/// Cloning is cheap and shares the connection. Dropping the last clone stops the background
/// connection task; [`close`](RedisStore::close) does it gracefully.
///
/// # Keys
/// With the default prefix `epcheck:`:
/// - `epcheck:<svc>:targets` — hash, target name → [`TargetRecord`](crate::TargetRecord) JSON;
/// - `epcheck:<svc>:applied` — string, [`AppliedRecord`](crate::AppliedRecord) JSON;
/// - `epcheck:events` — stream of transitions (fields `svc` and `event`, the
///   [`TransitionEvent`](crate::TransitionEvent) JSON), trimmed with `XADD … MAXLEN ~ N`
///   (approximate: Redis trims whole stream nodes, so a few more than N may stay);
/// - `epcheck:services` — set of the services written;
/// - `epcheck:lock:<name>` — the leader lock ([`RedisLock`]).
///
/// # Connecting, timeouts and reconnection
/// The daemon must keep running while Redis is down, so:
/// - [`connect`](RedisStore::connect) tries once, within `connect_timeout`, and returns an
///   error the caller can print (refused, unreachable, TLS, wrong password); once connected the
///   client reconnects by itself, forever.
/// - [`new_lazy`](RedisStore::new_lazy) returns at once and connects in the background,
///   retrying forever: the daemon starts even when Redis is not up yet.
/// - Reconnection backs off exponentially from 100 ms, doubling up to `reconnect_max_delay`
///   (2 s by default, plus up to 100 ms jitter), with no limit on attempts; credentials and db
///   are applied on every connection. After Redis comes back, calls succeed again within about
///   one backoff delay (≤ 2.1 s by default; 0.3-0.5 s measured after a 3 s outage).
/// - While the connection is down a call fails at once with [`Error::Unavailable`] (about
///   0.1 ms measured) instead of queueing until Redis is back: the store stops sending as soon
///   as fred reports the connection lost, and fred's per-command `fail_fast` covers the rest.
///   A call already in flight when the connection dies fails within `command_timeout`
///   (2 s by default). A connection that stops answering without closing (a network
///   partition) is dropped and reconnected after `command_timeout`.
/// - Connection errors are logged at `warn`, a repeated one at most once a minute; the
///   password never appears in logs or errors.
///
/// ```no_run
/// use state_store::{RedisOptions, RedisStore, StateStore};
///
/// # async fn run() -> state_store::Result<()> {
/// let options = RedisOptions {
///     password: Some(std::env::var("EPCHECK_REDIS_PASSWORD").unwrap_or_default().into()),
///     db: 1,
///     ..RedisOptions::new("10.0.0.5:6379")
/// };
/// // Starts even while Redis is down; calls fail fast until it is reachable.
/// let store = RedisStore::new_lazy(options).await?;
/// if let Err(e) = store.ping().await {
///     eprintln!("Redis not reachable yet: {e}");
/// }
/// let lock = store.lock("epcheck");
/// let leader = lock.try_acquire("pod-a-1234", std::time::Duration::from_secs(15)).await?;
/// # let _ = leader;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port`, safe to log.
    address: String,
    password: Option<SecretString>,
    prefix: String,
    events_max_len: u64,
    command_timeout: Duration,
    command_options: Options,
    /// Whether the connection is believed up: cleared as soon as fred reports a connection
    /// error, set when it reports a (re)connection. While it is clear, calls fail at once
    /// without reaching fred, whose own state stays "connected" for the first backoff delay
    /// after a connection drops (a command sent then would wait for the whole timeout).
    up: AtomicBool,
    /// The last connection error, cleared on (re)connect; used to explain fail-fast errors.
    last_error: Mutex<Option<BackendError>>,
    task: Mutex<Option<ConnectHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.shared.address)
            .field("prefix", &self.shared.prefix)
            .field("connected", &self.client.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects once within `connect_timeout` and returns the error if that fails (refused,
    /// unreachable, TLS, wrong credentials). After that, the client reconnects by itself.
    pub async fn connect(options: RedisOptions) -> Result<RedisStore> {
        let store = RedisStore::build(&options, true)?;
        let timeout = options.connect_timeout + options.command_timeout;
        let attempt = tokio::time::timeout(timeout, store.client.init()).await;
        let error = match attempt {
            Ok(Ok(task)) => {
                *store.shared.lock_task() = Some(task);
                store.shared.up.store(true, Ordering::Release);
                return Ok(store);
            }
            Ok(Err(e)) => store.shared.backend(&e),
            Err(_) => BackendError::new("Timeout", format!("no connection within {timeout:?}")),
        };
        let address = store.shared.address.clone();
        if error.kind() == ErrorKind::Auth.to_str() {
            return Err(Error::Auth {
                address,
                source: error,
            });
        }
        Err(Error::Connect {
            address,
            timeout: options.connect_timeout,
            source: error,
        })
    }

    /// Returns at once and connects in the background, retrying forever, so the daemon can
    /// start while Redis is down. Until the first connection, calls fail at once with
    /// [`Error::Unavailable`] (or [`Error::Auth`] when the last attempt was refused for its
    /// credentials). Fails only for invalid options.
    pub async fn new_lazy(options: RedisOptions) -> Result<RedisStore> {
        let store = RedisStore::build(&options, false)?;
        *store.shared.lock_task() = Some(store.client.connect());
        Ok(store)
    }

    fn build(options: &RedisOptions, fail_fast: bool) -> Result<RedisStore> {
        let resolved = options::resolve(options)?;
        let mut config = resolved.config;
        config.fail_fast = fail_fast;
        let max_delay = u32::try_from(options.reconnect_max_delay.as_millis())
            .unwrap_or(u32::MAX)
            .max(100);
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, max_delay, 2))
            .with_connection_config(|c| {
                c.connection_timeout = options.connect_timeout;
                c.internal_command_timeout = options.command_timeout;
                c.max_command_attempts = 2;
                c.tcp.nodelay = Some(true);
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(options.command_timeout),
                    interval: (options.command_timeout / 4).max(Duration::from_millis(50)),
                };
            })
            .with_performance_config(|p| p.default_command_timeout = options.command_timeout);
        let client = builder.build().map_err(|e| Error::InvalidAddress {
            address: resolved.display.clone(),
            reason: e.details().to_owned(),
        })?;
        let shared = Arc::new(Shared {
            address: resolved.display,
            password: resolved.password,
            prefix: options.key_prefix.clone(),
            events_max_len: options.events_max_len.max(1),
            command_timeout: options.command_timeout,
            command_options: Options {
                timeout: Some(options.command_timeout),
                fail_fast: true,
                max_attempts: Some(2),
                ..Options::default()
            },
            up: AtomicBool::new(false),
            last_error: Mutex::new(None),
            task: Mutex::new(None),
        });
        watch_connection(&client, &shared);
        Ok(RedisStore { client, shared })
    }

    /// `host:port` of the server, safe to log.
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Whether the store is connected right now (calls are sent to Redis).
    pub fn is_connected(&self) -> bool {
        self.shared.up.load(Ordering::Acquire) && self.client.is_connected()
    }

    /// Waits until the store is connected, at most `timeout`; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The consensus views of group `name` on this connection (SPEC §9.1).
    pub fn views(&self, name: &str) -> RedisViews {
        RedisViews::new(self.clone(), name)
    }

    /// The leader lock `<prefix>lock:<name>` on this connection.
    pub fn lock(&self, name: &str) -> RedisLock {
        RedisLock::new(self.clone(), format!("{}lock:{name}", self.shared.prefix))
    }

    /// Closes the connection (waiting at most the command timeout) and stops reconnecting.
    pub async fn close(&self) {
        self.shared.up.store(false, Ordering::Release);
        let _ = tokio::time::timeout(self.shared.command_timeout, self.client.quit()).await;
        if let Some(task) = self.shared.lock_task().take() {
            task.abort();
        }
    }

    /// How many entries the events stream holds (`XLEN`); about `events_max_len` at most.
    pub async fn event_count(&self) -> Result<u64> {
        let key = self.events_key();
        let k = key.clone();
        self.run("XLEN", &key, |c| async move { c.xlen(k).await })
            .await
    }

    fn targets_key(&self, service: &str) -> String {
        format!("{}{service}:targets", self.shared.prefix)
    }

    fn applied_key(&self, service: &str) -> String {
        format!("{}{service}:applied", self.shared.prefix)
    }

    fn events_key(&self) -> String {
        format!("{}events", self.shared.prefix)
    }

    fn services_key(&self) -> String {
        format!("{}services", self.shared.prefix)
    }

    /// Runs one command (or pipeline) with the per-call options, bounded in time, and maps
    /// fred's error to ours.
    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, call: F) -> Result<T>
    where
        F: FnOnce(WithOptions<Client>) -> Fut,
        Fut: Future<Output = std::result::Result<T, FredError>>,
    {
        if !self.shared.up.load(Ordering::Acquire) {
            return Err(self.unavailable(op, key, None));
        }
        let client = self.client.with_options(&self.shared.command_options);
        let guard = self.shared.command_timeout + GUARD_SLACK;
        match tokio::time::timeout(guard, call(client)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(op, key, &error)),
            Err(_) => Err(self.timeout(op, key)),
        }
    }

    fn timeout(&self, op: &'static str, key: &str) -> Error {
        Error::Timeout {
            address: self.shared.address.clone(),
            op,
            key: key.to_owned(),
            timeout: self.shared.command_timeout,
        }
    }

    /// The error for a call while not connected: explained by the last connection error
    /// (an authentication failure stays one), else by `source`.
    fn unavailable(&self, op: &'static str, key: &str, source: Option<BackendError>) -> Error {
        let address = self.shared.address.clone();
        match self.shared.last_error() {
            Some(last) if last.kind() == ErrorKind::Auth.to_str() => Error::Auth {
                address,
                source: last,
            },
            last => Error::Unavailable {
                address,
                op,
                key: key.to_owned(),
                source: last.or(source).unwrap_or_else(|| {
                    BackendError::new("Canceled", "not connected; reconnecting")
                }),
            },
        }
    }

    fn classify(&self, op: &'static str, key: &str, error: &FredError) -> Error {
        let address = self.shared.address.clone();
        let key = key.to_owned();
        let source = self.shared.backend(error);
        let disconnected = matches!(
            error.kind(),
            ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing
        ) || (*error.kind() == ErrorKind::Unknown
            && !self.client.is_connected());
        match error.kind() {
            ErrorKind::Auth => Error::Auth { address, source },
            ErrorKind::Timeout => self.timeout(op, &key),
            _ if disconnected => self.unavailable(op, &key, Some(source)),
            _ => Error::Command {
                address,
                op,
                key,
                source,
            },
        }
    }
}

impl Shared {
    fn lock_task(&self) -> std::sync::MutexGuard<'_, Option<ConnectHandle>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// fred's error as ours, with the password scrubbed.
    fn backend(&self, error: &FredError) -> BackendError {
        BackendError::new(error.kind().to_str(), readable_details(error.details()))
            .redacted(self.password.as_ref().map(|p| p.expose_secret()))
    }
}

/// The client's I/O errors carry the `Debug` form of `std::io::Error`
/// (`Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }`): shown to an
/// operator as `Connection refused (os error 111)`. Anything else is kept as it is.
fn readable_details(details: &str) -> String {
    let parsed = details.strip_prefix("Os { code: ").and_then(|rest| {
        let (code, rest) = rest.split_once(',')?;
        let (_, message) = rest.split_once("message: \"")?;
        let message = message.strip_suffix("\" }")?;
        Some(format!("{message} (os error {code})"))
    });
    parsed.unwrap_or_else(|| details.to_owned())
}

/// Logs connection errors (rate-limited) and reconnections, and remembers the last error so
/// that fail-fast errors can say why Redis is unavailable.
fn watch_connection(client: &Client, shared: &Arc<Shared>) {
    let mut errors = client.error_rx();
    let mut reconnects = client.reconnect_rx();
    // Weak, and no client clone: the task ends when the store is dropped and the client's
    // channels close.
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut last_logged: Option<(String, Instant)> = None;
        let mut suppressed = 0u64;
        loop {
            tokio::select! {
                received = errors.recv() => {
                    let Some(shared) = weak.upgrade() else { break };
                    let (error, _server) = match received {
                        Ok(received) => received,
                        Err(RecvError::Closed) => break,
                        // Missed errors: let calls through, fred fails them fast itself when
                        // it knows the connection is down.
                        Err(RecvError::Lagged(_)) => {
                            shared.up.store(true, Ordering::Release);
                            continue;
                        }
                    };
                    shared.up.store(false, Ordering::Release);
                    let error = shared.backend(&error);
                    let text = error.to_string();
                    let repeat = last_logged
                        .as_ref()
                        .is_some_and(|(t, at)| *t == text && at.elapsed() < LOG_REPEAT_EVERY);
                    // `connect` reports its own failure to its caller: no connection task
                    // yet means this is that first attempt.
                    let first_attempt = shared.lock_task().is_none();
                    if repeat || first_attempt {
                        suppressed += u64::from(repeat);
                        tracing::debug!(redis = %shared.address, error = %text, "Redis connection error");
                    } else {
                        tracing::warn!(redis = %shared.address, error = %text, suppressed,
                            "Redis connection error; reconnecting in the background");
                        suppressed = 0;
                        last_logged = Some((text, Instant::now()));
                    }
                    shared.set_last_error(Some(error));
                }
                received = reconnects.recv() => {
                    if matches!(received, Err(RecvError::Closed)) {
                        break;
                    }
                    let Some(shared) = weak.upgrade() else { break };
                    shared.up.store(true, Ordering::Release);
                    if shared.last_error().is_some() {
                        tracing::info!(redis = %shared.address, "reconnected to Redis");
                    }
                    shared.set_last_error(None);
                    last_logged = None;
                }
            }
        }
    });
}

/// A stored value as text; `None` (skipped by the caller) for non-strings.
fn text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}
