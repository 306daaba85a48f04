//! Telling people about transitions (SPEC §8.2): the `notify.script` and the `notify.webhooks`.
//!
//! [`Notifier::notify`] never waits: each channel (the script, each webhook) has bounded queues
//! drained by worker tasks, and an event that finds its queue full is dropped and counted. Each
//! channel's counters ([`ChannelStats`]) say how many events were sent, failed or dropped.
//!
//! Within a channel, events are spread over a few *lanes* (4 by default) by their key (the
//! service and target, or the service): events of one target are delivered one at a time and in
//! order, events of different targets may be delivered at once, at most one per lane.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use epcheck::notify::{NotifyEvent, NotifyOptions, Notifier, ServiceTracker};
//! # async fn demo(config: epcheck::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let notifier = Notifier::new(&config.notify, NotifyOptions::default())?;
//! let mut services = ServiceTracker::new();
//! if let Some(event) = services.observe("redis", 2, 3, std::time::SystemTime::now()) {
//!     notifier.notify(NotifyEvent::Service(event));
//! }
//! notifier.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod delivery;
mod dingtalk;
mod event;
mod script;
mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::NotifyConfig;

pub use delivery::{RetryPolicy, redact};
pub(crate) use delivery::{client as http_client, parse_url, post_json, retryable_status};
pub use dingtalk::sign as dingtalk_sign;
pub use event::{
    NotifyEvent, ServiceEvent, ServiceHealth, ServiceTracker, TargetEvent, rfc3339, service_state,
    should_notify,
};
pub(crate) use webhook::quoted;

use script::ScriptSink;
use webhook::WebhookSink;

/// Why the notifier could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// [`Notifier::new`] was called outside a Tokio runtime.
    #[error("the notifier needs a Tokio runtime to run its workers")]
    NoRuntime,
    /// A webhook URL cannot be used (the URL itself is not repeated: it may hold a token).
    #[error("notify.webhooks[{index}].url {problem}")]
    Url {
        /// Index in `notify.webhooks`.
        index: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// The TLS configuration could not be built.
    #[error("cannot set up TLS for the webhooks")]
    Tls(#[from] probe_core::Error),
}

/// How one event ended on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// Delivered.
    Sent,
    /// Given up on after its last attempt.
    Failed,
    /// Never attempted (queue full, or abandoned at shutdown).
    Dropped,
}

impl Delivery {
    /// `sent`, `failed` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        }
    }
}

/// Called once per event and channel with how it ended (for metrics:
/// `Arc::new(move |ch, d| metrics.notification(..))`). Runs on the notifier's worker tasks or in
/// [`Notifier::notify`]: it must be quick and must not block.
pub type Observer = Arc<dyn Fn(&ChannelStats, Delivery) + Send + Sync>;

/// Tuning of the [`Notifier`]; [`Default`] has the documented values.
#[derive(Clone)]
pub struct NotifyOptions {
    /// Events waiting per lane before new ones are dropped (default 256).
    pub queue_capacity: usize,
    /// Lanes per channel: deliveries of one channel that may run at once (default 4).
    pub lanes: usize,
    /// How long the script may run before its whole process group is killed (default 10 s).
    pub script_timeout: Duration,
    /// Webhook timeouts and retries (default: 4 attempts, 0.5/1/2 s pauses, 5 s per attempt).
    pub retry: RetryPolicy,
    /// Told how each event ended on each channel (default: nobody).
    pub observer: Option<Observer>,
}

impl std::fmt::Debug for NotifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyOptions")
            .field("queue_capacity", &self.queue_capacity)
            .field("lanes", &self.lanes)
            .field("script_timeout", &self.script_timeout)
            .field("retry", &self.retry)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            lanes: 4,
            script_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            observer: None,
        }
    }
}

/// Counters of one channel, for logs and metrics (`epcheck_notifications_total{channel,result}`).
pub struct ChannelStats {
    /// `script`, `webhook-0`, `webhook-1`, … (index in `notify.webhooks`): a metric label.
    pub name: String,
    /// `script`, `json` or `dingtalk`.
    pub kind: &'static str,
    /// The script's path or the webhook's URL without query (safe to log).
    pub endpoint: String,
    /// Events delivered (script exit 0; HTTP 2xx, and `errcode` 0 for DingTalk).
    pub sent: AtomicU64,
    /// Events given up on after their last attempt.
    pub failed: AtomicU64,
    /// Events never attempted: queue full, or still queued when shutdown's grace ended.
    pub dropped: AtomicU64,
    /// Script runs and HTTP requests made, retries included.
    pub attempts: AtomicU64,
    enqueued: AtomicU64,
    observer: Option<Observer>,
}

impl std::fmt::Debug for ChannelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelStats")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("counts", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl ChannelStats {
    fn new(name: String, kind: &'static str, endpoint: String, observer: Option<Observer>) -> Self {
        Self {
            name,
            kind,
            endpoint,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            enqueued: AtomicU64::new(0),
            observer,
        }
    }

    /// Counts `n` events that ended as `delivery` and tells the observer.
    fn record(&self, delivery: Delivery, n: u64) {
        let counter = match delivery {
            Delivery::Sent => &self.sent,
            Delivery::Failed => &self.failed,
            Delivery::Dropped => &self.dropped,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            for _ in 0..n {
                observer(self, delivery);
            }
        }
    }

    /// `(sent, failed, dropped, attempts)` now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.attempts.load(Ordering::Relaxed),
        )
    }
}

/// Where a channel's events go.
enum Sink {
    Script(ScriptSink),
    Webhook(Box<WebhookSink>),
}

impl Sink {
    async fn deliver(&self, event: &NotifyEvent, stats: &ChannelStats) -> Result<(), String> {
        match self {
            Sink::Script(s) => {
                stats.attempts.fetch_add(1, Ordering::Relaxed);
                s.run(event).await
            }
            Sink::Webhook(w) => w.deliver(event, stats).await,
        }
    }
}

type Lanes = Vec<mpsc::Sender<Arc<NotifyEvent>>>;

struct Channel {
    stats: Arc<ChannelStats>,
    /// `None` once shut down.
    lanes: Mutex<Option<Lanes>>,
    drop_log: LogLimiter,
}

/// Runs the notification channels of a [`NotifyConfig`]. Share it behind an `Arc`.
pub struct Notifier {
    channels: Vec<Channel>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Starts the workers of every configured channel. Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`NotifyError`] when outside a runtime, when a webhook URL is unusable, or when TLS cannot
    /// be set up.
    pub fn new(config: &NotifyConfig, options: NotifyOptions) -> Result<Self, NotifyError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
        let mut sinks: Vec<(Arc<ChannelStats>, Sink)> = Vec::new();
        if let Some(path) = &config.script {
            let stats = ChannelStats::new(
                "script".into(),
                "script",
                path.display().to_string(),
                options.observer.clone(),
            );
            let sink = Sink::Script(ScriptSink::new(path.clone(), options.script_timeout));
            sinks.push((Arc::new(stats), sink));
        }
        if !config.webhooks.is_empty() {
            let client = delivery::client(options.retry.timeout)?;
            for (index, hook) in config.webhooks.iter().enumerate() {
                let sink = WebhookSink::new(hook, client.clone(), options.retry)
                    .map_err(|problem| NotifyError::Url { index, problem })?;
                let stats = ChannelStats::new(
                    format!("webhook-{index}"),
                    sink.kind(),
                    sink.redacted(),
                    options.observer.clone(),
                );
                sinks.push((Arc::new(stats), Sink::Webhook(Box::new(sink))));
            }
        }
        let mut workers = Vec::new();
        let mut channels = Vec::new();
        for (stats, sink) in sinks {
            let sink = Arc::new(sink);
            let fail_log = Arc::new(LogLimiter::new());
            let mut lanes = Vec::new();
            for _ in 0..options.lanes.max(1) {
                let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
                lanes.push(tx);
                workers.push(runtime.spawn(lane(
                    rx,
                    Arc::clone(&sink),
                    Arc::clone(&stats),
                    Arc::clone(&fail_log),
                )));
            }
            channels.push(Channel {
                stats,
                lanes: Mutex::new(Some(lanes)),
                drop_log: LogLimiter::new(),
            });
        }
        Ok(Self {
            channels,
            workers: Mutex::new(workers),
        })
    }

    /// A notifier with no channel: [`notify`](Self::notify) does nothing.
    pub fn disabled() -> Self {
        Self {
            channels: Vec::new(),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// Whether any channel is configured.
    pub fn is_enabled(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Every channel's counters, script first, then the webhooks in config order.
    pub fn stats(&self) -> Vec<Arc<ChannelStats>> {
        self.channels.iter().map(|c| Arc::clone(&c.stats)).collect()
    }

    /// Queues `event` on every channel and returns at once; never blocks, never fails.
    ///
    /// Contract with the caller (the daemon):
    /// - call it once per transition, as decided by the rise/fall tracker ([`should_notify`]
    ///   says which target transitions are worth it) and by [`ServiceTracker`] for services;
    /// - never for state restored from the store at start-up;
    /// - each channel then delivers the event at most once: a retry is made only when no
    ///   success was received (a connect error, a 5xx or 429 reply, a timeout: only the last may
    ///   duplicate, when the receiver got the request but its reply was lost), never after a
    ///   success, and never after another 4xx;
    /// - a channel whose queue is full drops the event and counts it in
    ///   [`ChannelStats::dropped`] (logged at most every 30 s per channel).
    pub fn notify(&self, event: NotifyEvent) {
        if self.channels.is_empty() {
            return;
        }
        let event = Arc::new(event);
        let hash = event.lane_hash();
        for channel in &self.channels {
            let sent = {
                let lanes = lock(&channel.lanes);
                match lanes.as_ref() {
                    Some(l) if !l.is_empty() => {
                        let i = usize::try_from(hash % l.len() as u64).unwrap_or(0);
                        l.get(i)
                            .is_some_and(|tx| tx.try_send(Arc::clone(&event)).is_ok())
                    }
                    _ => false,
                }
            };
            if sent {
                channel.stats.enqueued.fetch_add(1, Ordering::Relaxed);
            } else {
                channel.stats.record(Delivery::Dropped, 1);
                if let Some(suppressed) = channel.drop_log.allow() {
                    tracing::warn!(
                        channel = %channel.stats.name, endpoint = %channel.stats.endpoint,
                        event = %event.name(), suppressed,
                        "notification dropped: the channel's queue is full or shut down"
                    );
                }
            }
        }
    }

    /// Stops taking events and waits up to `grace` for queued and in-flight deliveries; what is
    /// left then is abandoned (a running script's process group is killed) and counted as
    /// dropped. Returns whether everything was delivered (or failed) in time. Call it once, on
    /// exit.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        for channel in &self.channels {
            // Dropping the senders ends each lane's worker once its queue is empty.
            lock(&channel.lanes).take();
        }
        let handles = std::mem::take(&mut *lock(&self.workers));
        let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
        let mut joined = std::pin::pin!(futures::future::join_all(handles));
        if tokio::time::timeout(grace, &mut joined).await.is_ok() {
            return true;
        }
        for a in &aborts {
            a.abort();
        }
        joined.await;
        for channel in &self.channels {
            let s = &channel.stats;
            let done = s.sent.load(Ordering::Relaxed) + s.failed.load(Ordering::Relaxed);
            let left = s.enqueued.load(Ordering::Relaxed).saturating_sub(done);
            if left > 0 {
                s.record(Delivery::Dropped, left);
                tracing::warn!(
                    channel = %s.name, endpoint = %s.endpoint, abandoned = left,
                    grace_ms = grace.as_millis() as u64,
                    "notifications still pending at shutdown were abandoned"
                );
            }
        }
        false
    }
}

/// One lane's worker: delivers its events in order until the senders are gone.
async fn lane(
    mut rx: mpsc::Receiver<Arc<NotifyEvent>>,
    sink: Arc<Sink>,
    stats: Arc<ChannelStats>,
    fail_log: Arc<LogLimiter>,
) {
    while let Some(event) = rx.recv().await {
        match sink.deliver(&event, &stats).await {
            Ok(()) => {
                stats.record(Delivery::Sent, 1);
                tracing::debug!(
                    channel = %stats.name, event = %event.name(), state = %event.state(),
                    "notification sent"
                );
            }
            Err(error) => {
                stats.record(Delivery::Failed, 1);
                if let Some(suppressed) = fail_log.allow() {
                    tracing::warn!(
                        channel = %stats.name, endpoint = %stats.endpoint,
                        event = %event.name(), state = %event.state(), %error, suppressed,
                        "notification failed"
                    );
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lets one log line through per period and counts the ones held back.
struct LogLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    const PERIOD: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = lock(&self.last);
        match *last {
            Some(t) if now.duration_since(t) < Self::PERIOD => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
