//! [`Election`]: a running election as one handle, whatever the lock, so that a daemon asks
//! one thing ("may I write?") and stops one way.

use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use super::{
    ElectionConfig, LeaderElector, LeaderState, LeaseLock, RELEASE_TIMEOUT, TtlElector, TtlLock,
};
use crate::{Client, Error};

/// A running election (or none: [`Election::standalone`] always leads): the leadership channel
/// and the task that keeps the lock.
#[derive(Debug)]
pub struct Election {
    identity: String,
    state: watch::Receiver<LeaderState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Keeps a standalone channel open, so `changed()` waits instead of failing.
    _standalone: Option<watch::Sender<LeaderState>>,
}

impl Election {
    /// No election: always leader.
    pub fn standalone(identity: impl Into<String>) -> Self {
        let identity = identity.into();
        let (tx, state) = watch::channel(LeaderState::standalone(identity.clone()));
        Self {
            identity,
            state,
            stop: None,
            task: None,
            _standalone: Some(tx),
        }
    }

    /// Elects through the Lease `namespace/name` ([`LeaseLock`]). Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// Invalid timings or Lease name.
    pub fn lease(
        client: &Client,
        namespace: &str,
        name: &str,
        settings: ElectionConfig,
    ) -> Result<Self, Error> {
        let lock = LeaseLock::new(client.clone(), namespace, name, &settings.identity)?;
        let identity = settings.identity.clone();
        let elector = LeaderElector::new(lock, settings)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = elector.subscribe();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self::running(identity, state, stop, task))
    }

    /// Elects through a lock that expires by itself ([`TtlLock`], e.g. a Redis key). Must be
    /// called within a tokio runtime.
    ///
    /// # Errors
    /// Invalid timings.
    pub fn ttl_lock<L: TtlLock + Send + Sync + 'static>(
        lock: L,
        settings: ElectionConfig,
    ) -> Result<Self, Error> {
        let identity = settings.identity.clone();
        let elector = TtlElector::new(lock, settings)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = elector.subscribe();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Ok(Self::running(identity, state, stop, task))
    }

    fn running(
        identity: String,
        state: watch::Receiver<LeaderState>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    ) -> Self {
        Election {
            identity,
            state,
            stop: Some(stop),
            task: Some(task),
            _standalone: None,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A receiver of the leadership state (hand it to the daemon).
    pub fn subscribe(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
    }

    /// Whether this replica may write now.
    pub fn is_leader(&self) -> bool {
        self.state.borrow().leads_at(Instant::now())
    }

    /// Stops the election: `is_leader` turns false, then a held lock is released (bounded by
    /// [`RELEASE_TIMEOUT`]). Call it after the daemon stopped writing. Dropping the handle
    /// does the same in the background.
    pub async fn shutdown(mut self) {
        drop(self.stop.take());
        if let Some(mut task) = self.task.take()
            && timeout(RELEASE_TIMEOUT + Duration::from_secs(1), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    /// Stops at once without releasing (the lock expires by itself), as if the process died.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
