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
use super::connector::Connector;
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

/// The shard's own plain connects ([`Connector`]), where the platform has them: opened at the
/// first plain connect (a shard of other checks never makes one), and given up for good if that
/// fails (no descriptor left for an epoll instance), every probe then running as a future.
#[derive(Default)]
enum Direct {
    #[default]
    Unopened,
    Open(Box<Connector>),
    Unavailable,
}

impl Direct {
    /// The connector, opening it first if need be; `None` where there is none.
    fn open(&mut self) -> Option<&mut Connector> {
        #[cfg(target_os = "linux")]
        {
            if matches!(self, Direct::Unopened) {
                *self = Connector::new().map_or(Direct::Unavailable, |c| Direct::Open(Box::new(c)));
            }
            match self {
                Direct::Open(connector) => Some(connector),
                _ => None,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            *self = Direct::Unavailable;
            None
        }
    }

    /// The connector, if one is open.
    fn get(&mut self) -> Option<&mut Connector> {
        match self {
            Direct::Open(connector) => Some(connector),
            _ => None,
        }
    }
}

/// Starts `started` in the connector when it is a plain connect (a result known at once goes to
/// `finished`); otherwise gives it back, to run as a future of `probe`.
fn start_direct<P: Probe>(
    probe: &P,
    direct: &mut Direct,
    started: Launch,
    permit: OwnedSemaphorePermit,
    finished: &mut Vec<Done>,
) -> Option<(Launch, OwnedSemaphorePermit)> {
    if let Some(half_open) = probe.plain_connect(&started.check)
        && let Some(connector) = direct.open()
    {
        let addr = started.target.addr();
        let timeout = started.timeout;
        if let Some(done) = connector.start(addr, half_open, started, timeout, permit) {
            finished.push(done);
        }
        return None;
    }
    Some((started, permit))
}

/// Waits until a plain connect finishes and collects the finished ones into `finished`; never,
/// while none is in flight. `false`: the runtime is shutting down.
async fn collect_direct(direct: &mut Direct, finished: &mut Vec<Done>) -> bool {
    match direct.get() {
        Some(connector) if !connector.is_empty() => connector.collect(finished).await.is_ok(),
        _ => std::future::pending().await,
    }
}

/// Feeds finished probes to the timetable and their events to the outbox.
fn complete(
    table: &mut Timetable,
    outbox: &mut Outbox,
    finished: &mut Vec<Done>,
    now: Instant,
) -> Result<(), Closed> {
    for done in finished.drain(..) {
        outbox.push(table.complete(done, now))?;
    }
    Ok(())
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
    let mut direct = Direct::default();
    let mut finished = Vec::new();
    for event in table.static_events(Instant::now()) {
        if outbox.push(event).is_err() {
            return;
        }
    }
    let sleep = tokio::time::sleep_until(Instant::now() + IDLE);
    tokio::pin!(sleep);

    loop {
        let now = Instant::now();
        if let Some(connector) = direct.get() {
            connector.expire(now, &mut finished);
        }
        if !outbox.is_full() {
            table.pop_due(now);
            while table.has_ready() {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    break;
                };
                if let Some(started) = table.start_next(now)
                    && let Some((started, permit)) =
                        start_direct(&*probe, &mut direct, started, permit, &mut finished)
                {
                    running.push(launch(&probe, started, permit));
                }
            }
        }
        // Timeouts, and connects that failed at once (a refusal on loopback, no descriptor).
        if complete(&mut table, &mut outbox, &mut finished, now).is_err() {
            return;
        }
        let starting = !outbox.is_full();
        // A full outbox stops new probes, not the timeouts of those in flight.
        let due = if starting {
            table.next_deadline()
        } else {
            None
        };
        let due = match (due, direct.get().and_then(Connector::next_deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(deadline) = due
            && sleep.deadline() != deadline
        {
            sleep.as_mut().reset(deadline);
        }

        tokio::select! {
            biased;
            // Finished probes first: they free permits and feed the trackers.
            Some(done) = running.next() => {
                let event = table.complete(done, Instant::now());
                if outbox.push(event).is_err() {
                    return;
                }
            }
            alive = collect_direct(&mut direct, &mut finished) => {
                if !alive || complete(&mut table, &mut outbox, &mut finished, Instant::now()).is_err() {
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
                    && let Some((started, permit)) =
                        start_direct(&*probe, &mut direct, started, permit, &mut finished)
                {
                    running.push(launch(&probe, started, permit));
                }
            }
            () = &mut sleep, if due.is_some() => {}
            // Nothing in flight, nothing armed (a shard of static targets): wait to be dropped.
            else => std::future::pending::<()>().await,
        }
    }
}
