//! Leader election on a lock that expires by itself on its server's clock — a Redis key set
//! with `SET NX PX` — with the same rules and the same [`LeaderState`] output as the Lease
//! elector.
//!
//! Where a Lease needs every candidate to time the holder on its own clock, a TTL lock is
//! timed by the server that stores it: the key vanishes `lease_duration` after its holder's
//! last renewal *as executed there*, so candidates just try to take it every `retry_period`.
//! The holder's term still ends, by a local timer, `renew_deadline` after the *start* of its
//! last successful renewal — before the key can expire, since `renew_deadline <
//! lease_duration` and the server ran the renewal after it started.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::config::RELEASE_TIMEOUT;
use super::elector::error_chain;
use super::identity::Rng;
use super::{ElectionConfig, LeaderState, StatePublisher, term_timer};
use crate::error::Error;

/// A lock key with a time-to-live kept by its server, renewed and released only by its holder
/// (compare-and-set). Every error means "not confirmed", never "still held".
pub trait TtlLock: Send + Sync {
    /// Takes the lock for `ttl` if nobody holds it, or extends it if `identity` does;
    /// `Ok(true)` when `identity` holds it now.
    fn acquire(
        &self,
        identity: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Extends the lock to `ttl` from now; `Ok(false)` when `identity` no longer holds it.
    fn renew(
        &self,
        identity: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Frees the lock if `identity` holds it; `Ok(false)` when it did not.
    fn release(&self, identity: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Who holds the lock, if anyone.
    fn holder(&self) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// The lock for messages (`Redis key epcheck:lock:epcheck`).
    fn describe(&self) -> String;
}

/// One candidate in a leader election over a [`TtlLock`], whose time-to-live is
/// `lease_duration`.
#[derive(Debug)]
pub struct TtlElector<L> {
    lock: L,
    config: ElectionConfig,
    publisher: StatePublisher,
    describe: String,
}

enum Step {
    Shutdown,
    Deadline,
    /// `Ok(true)`: held since the attempt started; `Ok(false)`: someone else holds it.
    Tried(Instant, Result<bool, Error>),
}

impl<L: TtlLock> TtlElector<L> {
    /// A candidate for `lock`.
    ///
    /// # Errors
    ///
    /// [`Error::ElectionConfig`] when `config` is invalid.
    pub fn new(lock: L, config: ElectionConfig) -> Result<Self, Error> {
        config.validate()?;
        let describe = lock.describe();
        let publisher = StatePublisher::new(&describe, &config.identity, Instant::now());
        Ok(Self {
            lock,
            config,
            publisher,
            describe,
        })
    }

    /// A receiver of this candidate's [`LeaderState`].
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.publisher.subscribe()
    }

    /// Runs until `shutdown` resolves; then, if leading, publishes `is_leader: false` and
    /// releases the lock (when `release_on_cancel`). Dropping the future instead stops at
    /// once without a release; the key then expires on its server.
    pub async fn run<F: Future<Output = ()>>(self, shutdown: F) {
        let mut shutdown = pin!(shutdown);
        let (id, lock) = (self.config.identity.as_str(), self.describe.as_str());
        let ttl = self.config.lease_duration;
        let mut rng = Rng::new();
        let (mut deadline, mut holder) = (None::<Instant>, None::<String>);
        let mut next = Instant::now();
        let mut last_error: Option<String> = None;
        tracing::info!(%lock, identity = %id, "leader election started");
        loop {
            let leading = deadline.is_some();
            let step = tokio::select! {
                biased;
                () = &mut shutdown => Step::Shutdown,
                () = term_timer(deadline) => Step::Deadline,
                (started, result) = async {
                    sleep_until(next).await;
                    let started = Instant::now();
                    let result = if leading {
                        self.lock.renew(id, ttl).await
                    } else {
                        self.lock.acquire(id, ttl).await
                    };
                    (started, result)
                } => Step::Tried(started, result),
            };
            let now = Instant::now();
            match step {
                Step::Shutdown => break,
                Step::Deadline => {
                    tracing::warn!(%lock, identity = %id, "could not renew the lock within renew_deadline; no longer leader");
                    deadline = None;
                }
                Step::Tried(started, Ok(true)) => {
                    last_error = None;
                    deadline = Some(started + self.config.renew_deadline);
                    holder = Some(id.to_owned());
                }
                Step::Tried(_, Ok(false)) => {
                    last_error = None;
                    deadline = None;
                    holder = self.lock.holder().await.unwrap_or(None);
                }
                Step::Tried(_, Err(error)) => {
                    let text = error_chain(&error);
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(%lock, error = %text, "leader election failed");
                    }
                    last_error = Some(text);
                }
            }
            let now = Instant::now().max(now);
            deadline = deadline.filter(|d| now < *d);
            self.publisher.publish(holder.as_deref(), deadline, now);
            next = now
                + match deadline {
                    Some(_) => self.config.retry_period,
                    None => self.config.jittered_retry(rng.unit()),
                };
        }
        let leading = deadline.is_some_and(|d| Instant::now() < d);
        // Stop leading before the release: once it is done, another replica may lead.
        let others = holder.as_deref().filter(|h| *h != id);
        self.publisher.publish(others, None, Instant::now());
        if leading && self.config.release_on_cancel {
            match timeout(RELEASE_TIMEOUT, self.lock.release(id)).await {
                Ok(Ok(_)) => tracing::info!(%lock, identity = %id, "released the lock"),
                Ok(Err(error)) => {
                    tracing::warn!(%lock, error = %error, "could not release the lock; it expires by itself");
                }
                Err(_) => {
                    tracing::warn!(%lock, "releasing the lock timed out; it expires by itself");
                }
            }
        }
    }
}
