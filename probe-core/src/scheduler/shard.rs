//! One shard's loop: a timer, the probes in flight, and the events on their way out.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Duration, Instant};

use super::ProbeEvent;
use super::probe::Probe;
use super::timetable::{Done, Launch, Timetable};

/// Where the sleep rests while no timer is armed. Never reached: the branch is disabled then.
const IDLE: Duration = Duration::from_secs(86_400);

/// The receiving side of the events channel is gone.
struct Closed;

/// Events that did not fit into the channel, in order.
///
/// A full channel never stops the loop from collecting finished probes (whose latency would
/// otherwise include the wait); it stops new probes from starting once a channel's worth of
/// events is waiting here, so memory stays bounded by that plus the probes in flight.
struct Outbox {
    events: mpsc::Sender<ProbeEvent>,
    queue: VecDeque<ProbeEvent>,
    cap: usize,
}

impl Outbox {
    fn new(events: mpsc::Sender<ProbeEvent>) -> Self {
        let cap = events.max_capacity().max(1);
        Self {
            events,
            queue: VecDeque::new(),
            cap,
        }
    }

    fn is_full(&self) -> bool {
        self.queue.len() >= self.cap
    }

    /// Sends `event` at once if the channel has room and nothing is queued before it.
    fn push(&mut self, event: ProbeEvent) -> Result<(), Closed> {
        if self.queue.is_empty() {
            match self.events.try_send(event) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(event)) => self.queue.push_back(event),
                Err(TrySendError::Closed(_)) => return Err(Closed),
            }
        } else {
            self.queue.push_back(event);
        }
        Ok(())
    }

    /// Sends as many queued events as the channel takes without waiting.
    fn flush(&mut self) -> Result<(), Closed> {
        while !self.queue.is_empty() {
            match self.events.try_reserve() {
                Ok(permit) => {
                    if let Some(event) = self.queue.pop_front() {
                        permit.send(event);
                    }
                }
                Err(TrySendError::Full(())) => break,
                Err(TrySendError::Closed(())) => return Err(Closed),
            }
        }
        Ok(())
    }
}

/// The future of one probe: it owns its target, check and permit, so it can run while the
/// timetable changes, and gives the permit back the moment the probe is over.
fn launch<P: Probe>(
    probe: &Arc<P>,
    launch: Launch,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = Done> + Send + 'static {
    let probe = Arc::clone(probe);
    async move {
        let outcome = probe
            .probe(&launch.target, &launch.check, launch.timeout)
            .await;
        drop(permit);
        Done {
            idx: launch.idx,
            target: launch.target,
            started: launch.started,
            skipped: launch.skipped,
            outcome,
        }
    }
}

/// Waits for a permit. The `Arc` is cloned only when polled: `select!` builds every branch's
/// future on each pass of the loop, even a disabled one.
async fn acquire(permits: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, AcquireError> {
    Arc::clone(permits).acquire_owned().await
}

/// Runs one shard until the events receiver is dropped. Dropping the returned future cancels
/// the shard's probes in flight.
pub(super) async fn run<P: Probe>(
    mut table: Timetable,
    probe: Arc<P>,
    permits: Arc<Semaphore>,
    events: mpsc::Sender<ProbeEvent>,
) {
    let mut outbox = Outbox::new(events.clone());
    let mut running = FuturesUnordered::new();
    for event in table.static_events(Instant::now()) {
        if outbox.push(event).is_err() {
            return;
        }
    }
    let sleep = tokio::time::sleep_until(Instant::now() + IDLE);
    tokio::pin!(sleep);

    loop {
        let now = Instant::now();
        if !outbox.is_full() {
            table.pop_due(now);
            while table.has_ready() {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    break;
                };
                if let Some(started) = table.start_next(now) {
                    running.push(launch(&probe, started, permit));
                }
            }
        }
        let deadline = table.next_deadline();
        if let Some(deadline) = deadline
            && sleep.deadline() != deadline
        {
            sleep.as_mut().reset(deadline);
        }
        let starting = !outbox.is_full();

        tokio::select! {
            biased;
            // Finished probes first: they free permits and feed the trackers.
            Some(done) = running.next() => {
                let event = table.complete(done, Instant::now());
                if outbox.push(event).is_err() {
                    return;
                }
            }
            reserved = events.reserve(), if !outbox.queue.is_empty() => {
                let Ok(permit) = reserved else { return };
                if let Some(event) = outbox.queue.pop_front() {
                    permit.send(event);
                }
                if outbox.flush().is_err() {
                    return;
                }
            }
            // No permit was free (held here or by another shard): start the next probe when one frees.
            permit = acquire(&permits), if starting && table.has_ready() => {
                if let Ok(permit) = permit
                    && let Some(started) = table.start_next(Instant::now())
                {
                    running.push(launch(&probe, started, permit));
                }
            }
            () = &mut sleep, if starting && deadline.is_some() => {}
            // Nothing in flight, nothing armed (a shard of static targets): wait to be dropped.
            else => std::future::pending::<()>().await,
        }
    }
}
