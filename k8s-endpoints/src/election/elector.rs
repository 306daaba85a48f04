//! The election loop: reads and writes the [`Lock`] on a timer, ends a term by a deadline timer,
//! and publishes [`LeaderState`] on a `watch` channel.

use std::future::Future;
use std::pin::pin;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::config::RELEASE_TIMEOUT;
use super::core::{Decision, ElectionCore};
use super::identity::Rng;
use super::{ElectionConfig, Lock, MicroTime};
use crate::error::Error;

/// What a replica knows about leadership, as published on the elector's `watch` channel.
///
/// Receivers are woken when `is_leader` or `leader` changes; `valid_until` is moved forward
/// on every renewal without waking them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    /// Whether this replica is the leader (may write).
    pub is_leader: bool,
    /// The holder the lock last showed (this replica's identity while it leads); `None`
    /// when nobody holds it or it was never read.
    pub leader: Option<String>,
    /// When `is_leader` or `leader` last changed (local monotonic clock).
    pub since: Instant,
    /// While leading under an election: the end of the current term unless renewed. `None`
    /// when not leading, or when leading without an election ([`LeaderState::standalone`]).
    pub valid_until: Option<Instant>,
}

impl LeaderState {
    /// Not leading; `leader` is whoever holds the lock.
    pub fn follower(leader: Option<String>, since: Instant) -> Self {
        Self {
            is_leader: false,
            leader,
            since,
            valid_until: None,
        }
    }

    /// Leading with no election at all (a single replica): always leader.
    pub fn standalone(identity: impl Into<String>) -> Self {
        Self {
            is_leader: true,
            leader: Some(identity.into()),
            since: Instant::now(),
            valid_until: None,
        }
    }

    /// Whether a write may start at `now`: leading, and the term has not run out. Checking
    /// this right before each write guards against a late wake-up of the elector task.
    pub fn leads_at(&self, now: Instant) -> bool {
        self.is_leader && self.valid_until.is_none_or(|until| now < until)
    }
}

/// The sending side of a [`LeaderState`] channel, shared by every election backend so they
/// all publish — and log transitions — the same way.
#[derive(Debug)]
pub struct StatePublisher {
    tx: watch::Sender<LeaderState>,
    lock: String,
    identity: String,
}

impl StatePublisher {
    /// A channel holding "not leader, no known leader" since `now`, for candidate
    /// `identity` on `lock` (both only for log messages).
    pub fn new(lock: impl Into<String>, identity: impl Into<String>, now: Instant) -> Self {
        Self {
            tx: watch::Sender::new(LeaderState::follower(None, now)),
            lock: lock.into(),
            identity: identity.into(),
        }
    }

    /// A new receiver.
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.tx.subscribe()
    }

    /// The current state.
    pub fn current(&self) -> LeaderState {
        self.tx.borrow().clone()
    }

    /// Publishes leading until `valid_until`, or following `leader` when `valid_until` is
    /// `None`. Receivers are notified, and the change logged, only when `is_leader` or
    /// `leader` changes; the result says whether they were.
    pub fn publish(
        &self,
        leader: Option<&str>,
        valid_until: Option<Instant>,
        now: Instant,
    ) -> bool {
        let is_leader = valid_until.is_some();
        let mut was_leader = false;
        let changed = self.tx.send_if_modified(|s| {
            was_leader = s.is_leader;
            let changed = s.is_leader != is_leader || s.leader.as_deref() != leader;
            if changed {
                s.is_leader = is_leader;
                s.leader = leader.map(str::to_owned);
                s.since = now;
            }
            s.valid_until = valid_until;
            changed
        });
        if changed {
            let (lock, identity) = (&self.lock, &self.identity);
            match (was_leader, is_leader) {
                (false, true) => tracing::info!(%lock, %identity, "became leader"),
                (true, false) => tracing::info!(%lock, %identity, ?leader, "stopped leading"),
                _ => tracing::info!(%lock, ?leader, "new leader observed"),
            }
        }
        changed
    }
}

/// An error and its causes on one line (`a: b: c`), for logs.
pub(crate) fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Resolves at `deadline`, never when there is none: the timer that ends a term.
pub async fn term_timer(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One candidate in a leader election over a [`Lock`] (client-go's `LeaderElector`).
///
/// ```no_run
/// use k8s_endpoints::Client;
/// use k8s_endpoints::election::{ElectionConfig, LeaderElector, LeaseLock, identity};
///
/// # async fn demo(client: Client) -> Result<(), k8s_endpoints::Error> {
/// let me = identity(&|k| std::env::var(k).ok());
/// let lock = LeaseLock::new(client, "epcheck", "epcheck", &me)?;
/// let elector = LeaderElector::new(lock, ElectionConfig::new(me))?;
/// let mut leadership = elector.subscribe();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(elector.run(async { let _ = stopped.await; }));
/// while leadership.changed().await.is_ok() {
///     let state = leadership.borrow().clone();
///     println!("leader: {} ({:?})", state.is_leader, state.leader);
/// }
/// # let _ = stop.send(()); let _ = task.await; Ok(()) }
/// ```
#[derive(Debug)]
pub struct LeaderElector<L> {
    lock: L,
    core: ElectionCore,
    publisher: StatePublisher,
    rng: Rng,
    describe: String,
}

/// The result of one attempt.
enum Attempt {
    /// Written: leading.
    Won,
    /// Someone else holds the lock.
    Held(String),
    /// Another candidate wrote first ([`Error::is_lost_race`]).
    Lost(Error),
    /// The read or write failed.
    Failed(&'static str, Error),
}

enum Step {
    Shutdown,
    Deadline,
    Tried(Attempt),
}

impl<L: Lock> LeaderElector<L> {
    /// A candidate for `lock`.
    ///
    /// # Errors
    ///
    /// [`Error::ElectionConfig`] when `config` is invalid or its identity is not the lock's.
    pub fn new(lock: L, config: ElectionConfig) -> Result<Self, Error> {
        config.validate()?;
        if config.identity != lock.identity() {
            return Err(Error::ElectionConfig {
                problem: format!(
                    "the identity {:?} differs from the lock's {:?}",
                    config.identity,
                    lock.identity()
                ),
            });
        }
        let describe = lock.describe();
        Ok(Self {
            lock,
            publisher: StatePublisher::new(&describe, &config.identity, Instant::now()),
            core: ElectionCore::new(config),
            rng: Rng::new(),
            describe,
        })
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.core.config().identity
    }

    /// A receiver of this candidate's [`LeaderState`].
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.publisher.subscribe()
    }

    /// Runs the election until `shutdown` resolves. Then, if this replica leads, it first
    /// publishes `is_leader: false` and then releases the lock (when `release_on_cancel`),
    /// within [`RELEASE_TIMEOUT`]. Dropping the future instead stops at once without a
    /// release; the others take over when the lease expires.
    pub async fn run<F: Future<Output = ()>>(mut self, shutdown: F) {
        let mut shutdown = pin!(shutdown);
        let mut next = Instant::now();
        let mut last_problem: Option<String> = None;
        tracing::info!(lock = %self.describe, identity = %self.identity(), "leader election started");
        loop {
            let deadline = self.core.deadline();
            let step = {
                let attempt = attempt(&self.lock, &mut self.core, next);
                tokio::select! {
                    biased;
                    () = &mut shutdown => Step::Shutdown,
                    () = term_timer(deadline) => Step::Deadline,
                    result = attempt => Step::Tried(result),
                }
            };
            let now = Instant::now();
            match step {
                Step::Shutdown => break,
                Step::Deadline => {
                    if self.core.expire(now) {
                        tracing::warn!(
                            lock = %self.describe, identity = %self.identity(),
                            renew_deadline_ms = millis(self.core.config().renew_deadline),
                            "could not renew the lock within renew_deadline; no longer leader"
                        );
                    }
                }
                Step::Tried(Attempt::Failed(what, error)) => {
                    let text = error_chain(&error);
                    if last_problem.as_deref() != Some(&text) {
                        tracing::warn!(lock = %self.describe, error = %text, "leader election: {what} failed");
                    } else {
                        tracing::debug!(lock = %self.describe, error = %text, "leader election: {what} failed again");
                    }
                    last_problem = Some(text);
                }
                Step::Tried(Attempt::Held(holder)) => {
                    tracing::debug!(lock = %self.describe, holder = %holder, "the lock is held and not expired");
                    last_problem = None;
                }
                Step::Tried(Attempt::Lost(error)) => {
                    tracing::debug!(lock = %self.describe, error = %error, "another candidate wrote the lock first");
                    last_problem = None;
                }
                Step::Tried(Attempt::Won) => last_problem = None,
            }
            self.publish(now);
            let wait = if self.core.is_leader(now) {
                self.core.config().retry_period
            } else {
                self.core.config().jittered_retry(self.rng.unit())
            };
            next = now + wait;
        }
        self.shutdown().await;
    }

    fn publish(&mut self, now: Instant) {
        self.core.expire(now);
        let valid_until = self.core.deadline().filter(|_| self.core.is_leader(now));
        let leader = match valid_until {
            Some(_) => Some(self.core.config().identity.as_str()),
            None => self.core.holder(),
        };
        self.publisher.publish(leader, valid_until, now);
    }

    async fn shutdown(&mut self) {
        let now = Instant::now();
        let release = if self.core.config().release_on_cancel {
            self.core.release(now, MicroTime::now())
        } else {
            None
        };
        // Stop leading before the release is written: once it is, another replica may lead.
        self.core.step_down();
        self.publish(now);
        let Some((record, version)) = release else {
            return;
        };
        let budget = RELEASE_TIMEOUT.min(self.core.config().renew_deadline);
        match timeout(budget, self.lock.update(&record, &version)).await {
            Ok(Ok(v)) => {
                self.core.released(record, v, Instant::now());
                tracing::info!(lock = %self.describe, identity = %self.identity(), "released the lock");
            }
            Ok(Err(error)) => {
                tracing::warn!(lock = %self.describe, error = %error, "could not release the lock; it expires by itself");
            }
            Err(_) => {
                tracing::warn!(lock = %self.describe, "releasing the lock timed out; it expires by itself");
            }
        }
        self.publish(Instant::now());
    }
}

/// One try: wait for `next`, then renew (without reading, when leading), or read the lock,
/// decide, and write.
async fn attempt<L: Lock>(lock: &L, core: &mut ElectionCore, next: Instant) -> Attempt {
    sleep_until(next).await;
    let started = Instant::now();
    let wall = MicroTime::now();
    if let Some((record, version)) = core.renewal(started, wall) {
        match lock.update(&record, &version).await {
            Ok(v) => {
                core.acquired(record, v, started, Instant::now());
                return Attempt::Won;
            }
            Err(error) => {
                tracing::debug!(error = %error, "renewing without a read failed; reading the lock");
            }
        }
    }
    let current = match lock.get().await {
        Ok(c) => c,
        Err(error) => return Attempt::Failed("reading the lock", error),
    };
    let now = Instant::now();
    core.observe(current, now);
    let (record, result) = match core.decide(now, wall) {
        Decision::Wait { holder, .. } => return Attempt::Held(holder),
        Decision::Create(record) => {
            let r = lock.create(&record).await;
            (record, r)
        }
        Decision::Update { record, version } => {
            let r = lock.update(&record, &version).await;
            (record, r)
        }
    };
    match result {
        Ok(v) => {
            core.acquired(record, v, started, Instant::now());
            Attempt::Won
        }
        // Another candidate wrote first: a stale version (409), or, for a create, a lock that
        // appeared since it was read (409 AlreadyExists, or a Lease's 422). An ordinary retry.
        Err(error) if error.is_lost_race() => Attempt::Lost(error),
        Err(error) => Attempt::Failed("writing the lock", error),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::client::ApiError;
    use crate::election::{ElectionConfig, LeaderRecord, Version};

    /// A lock that reads as missing and whose create loses to a replica that created it
    /// meanwhile, answering with `error`.
    struct Raced(fn() -> Error);

    impl Lock for Raced {
        async fn get(&self) -> Result<Option<(LeaderRecord, Version)>, Error> {
            Ok(None)
        }
        async fn create(&self, _record: &LeaderRecord) -> Result<Version, Error> {
            Err((self.0)())
        }
        async fn update(&self, _: &LeaderRecord, _: &Version) -> Result<Version, Error> {
            Err((self.0)())
        }
        fn identity(&self) -> &str {
            "a"
        }
        fn describe(&self) -> String {
            "Lease default/epcheck".into()
        }
    }

    fn api(code: u16, body: &str) -> Error {
        let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/epcheck";
        let e =
            ApiError::from_response("PUT", path, code, &http::HeaderMap::new(), body.as_bytes());
        Error::Api(Box::new(e))
    }

    /// What kube-apiserver 1.37 answers a `PUT` without `resourceVersion` to an existing Lease.
    fn needs_version() -> Error {
        api(
            422,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"leases.coordination.k8s.io \"epcheck\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update",
            "reason":"Invalid","details":{"name":"epcheck","group":"coordination.k8s.io","kind":"leases",
            "causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 0: must be specified for an update","field":"metadata.resourceVersion"}]},"code":422}"#,
        )
    }

    fn already_exists() -> Error {
        api(
            409,
            r#"{"kind":"Status","status":"Failure","reason":"AlreadyExists","code":409,
            "message":"leases.coordination.k8s.io \"epcheck\" already exists"}"#,
        )
    }

    fn other_invalid() -> Error {
        api(
            422,
            r#"{"kind":"Status","reason":"Invalid","code":422,
            "message":"leases.coordination.k8s.io \"epcheck\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
            "details":{"causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 0: must be greater than 0","field":"spec.leaseDurationSeconds"}]}}"#,
        )
    }

    async fn try_once(lock: &Raced) -> Attempt {
        let mut core = ElectionCore::new(ElectionConfig::new("a"));
        attempt(lock, &mut core, Instant::now()).await
    }

    #[tokio::test]
    async fn losing_the_creation_race_is_an_ordinary_retry() {
        for lost in [needs_version, already_exists] {
            let outcome = try_once(&Raced(lost)).await;
            assert!(matches!(outcome, Attempt::Lost(_)), "{}", lost());
        }
        // A Lease the ApiServer refuses for another reason is a failure, said loudly.
        assert!(matches!(
            try_once(&Raced(other_invalid)).await,
            Attempt::Failed(_, _)
        ));
    }
}
