//! Writing state to the store without ever blocking probing or reconciling.
//!
//! The daemon hands every write to a [`Persister`], a task with a bounded queue. When the store
//! is slow or down, writes fail (and are counted and logged, rate-limited) or, if the queue is
//! full, are dropped — the in-memory state stays authoritative and the next flush of every
//! target's record repairs what the store missed once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use state_store::{AppliedRecord, StateStore, TargetRecord, TransitionEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::observe::Observer;

/// One write.
#[derive(Debug)]
pub enum Write {
    /// All records of one service.
    Targets(String, Vec<TargetRecord>),
    /// One transition.
    Event(TransitionEvent),
    /// What was written to a service's object.
    Applied(String, AppliedRecord),
}

/// Counters shared with whoever reports on the store.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Writes that failed.
    pub errors: AtomicU64,
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The sending side.
#[derive(Debug, Clone)]
pub struct Persister {
    tx: mpsc::Sender<Write>,
    /// Error counters.
    pub stats: Arc<StoreStats>,
}

const QUEUE: usize = 4096;
const LOG_EVERY: Duration = Duration::from_secs(30);

impl Persister {
    /// Starts the writer task; each failed write is reported to `observers`.
    pub fn spawn(
        store: Arc<dyn StateStore>,
        observers: Arc<dyn Observer>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(StoreStats::default());
        let task = tokio::spawn(writer(store, rx, stats.clone(), observers));
        (Persister { tx, stats }, task)
    }

    /// Queues a write; drops it (counted) when the queue is full.
    pub fn write(&self, w: Write) {
        if self.tx.try_send(w).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn writer(
    store: Arc<dyn StateStore>,
    mut rx: mpsc::Receiver<Write>,
    stats: Arc<StoreStats>,
    observers: Arc<dyn Observer>,
) {
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    while let Some(w) = rx.recv().await {
        let result = match &w {
            Write::Targets(service, records) => store.save_targets(service, records).await,
            Write::Event(e) => store.append_event(e).await,
            Write::Applied(service, r) => store.save_applied(service, r).await,
        };
        if let Err(e) = result {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            observers.store_error();
            unlogged += 1;
            let now = Instant::now();
            if last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                tracing::warn!(
                    store = store.kind(),
                    error = %e,
                    failed_writes = unlogged,
                    "state store write failed; probing and reconciling go on from memory"
                );
                last_log = Some(now);
                unlogged = 0;
            }
        } else if unlogged > 0 || last_log.is_some() {
            if last_log.is_some() {
                tracing::info!(store = store.kind(), "state store writes succeed again");
            }
            last_log = None;
            unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_store::MockStateStore;

    #[tokio::test]
    async fn a_failing_store_is_counted_and_never_blocks() {
        let mut mock = MockStateStore::new();
        mock.expect_kind().return_const("mock");
        mock.expect_durable().return_const(true);
        mock.expect_save_targets().returning(|_, _| {
            Err(state_store::Error::Timeout {
                address: "127.0.0.1:6379".into(),
                op: "HSET",
                key: "epcheck:svc:targets".into(),
                timeout: Duration::from_millis(100),
            })
        });
        let (p, task) = Persister::spawn(
            Arc::new(mock),
            Arc::new(crate::daemon::Observers::default()),
        );
        for _ in 0..3 {
            p.write(Write::Targets("svc".into(), vec![]));
        }
        let stats = p.stats.clone();
        drop(p);
        let _ = task.await;
        assert_eq!(stats.errors.load(Ordering::Relaxed), 3);
    }
}
