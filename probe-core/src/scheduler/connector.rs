//! Plain connect checks run by the shard itself, without a task, a timer or a runtime
//! registration per probe (issue 15).
//!
//! A plain TCP connect check ([`Probe::plain_connect`](super::Probe::plain_connect)) is nothing
//! but a non-blocking `connect` and one readiness event. Through tokio, each one costs a
//! registration with the runtime's epoll (`epoll_ctl` to add and again to delete), a slot in
//! the runtime's I/O table, a timer-wheel entry for its timeout, a task in the shard's
//! `FuturesUnordered` and a wake-up of that task. Here instead:
//!
//! - the shard owns a private epoll instance (a [`mio::Poll`]), registered **once** with the
//!   runtime as an [`AsyncFd`]: the runtime wakes the shard when any of its connects has news;
//! - a connect adds its socket to the private epoll (one `epoll_ctl`); closing the socket takes it
//!   out again (no second `epoll_ctl`);
//! - one non-blocking `epoll_wait` collects every finished connect at once;
//! - timeouts are queues of deadlines inside the connector, one per timeout value (a shard
//!   starts its probes in time order, so each queue is sorted as it grows), read by the shard's
//!   one timer.
//!
//! Sockets are made with `SO_LINGER` 0 (and `TCP_QUICKACK` off for half-open checks) before the
//! connect, so closing one resets it, as in [`crate::tcp`]. The verdict comes from `SO_ERROR`, as
//! connect(2) prescribes, and errors are classified exactly as the other path classifies them.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::timetable::{Done, Launch};
use crate::outcome::{FailureKind, ProbeError, ProbeOutcome};

/// Readiness events taken per `epoll_wait`; more are taken by calling it again.
const EVENTS: usize = 256;

/// When a connect in flight times out: `(deadline, slab slot, seq)`.
type Deadline = (Instant, usize, u64);

/// A connect in flight.
struct Pending {
    socket: Socket,
    launch: Launch,
    timeout: Duration,
    /// Tells this connect from a later one in the same slab slot, for the deadline heap.
    seq: u64,
    /// Held until the connect is over: the scheduler's bound on probes in flight.
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    fn done(self, outcome: ProbeOutcome) -> Done {
        Done {
            idx: self.launch.idx,
            target: self.launch.target,
            started: self.launch.started,
            skipped: self.launch.skipped,
            outcome,
        }
        // `socket` is closed here: a reset if it connected (`SO_LINGER` 0), and out of the epoll.
    }
}

/// The plain connects of one shard.
pub(super) struct Connector {
    poll: AsyncFd<Poll>,
    events: Events,
    pending: Slab<Pending>,
    /// Per timeout value, `(deadline, slot, seq)` in start order; entries of connects that
    /// already finished are skipped when they come to the front.
    deadlines: Vec<(Duration, VecDeque<Deadline>)>,
    seq: u64,
}

impl Connector {
    /// A connector with its own epoll instance, registered with the current runtime.
    pub(super) fn new() -> io::Result<Self> {
        // tokio 1.54 deprecated the safe constructors because some `AsRawFd` types hand out a
        // descriptor they may close while registered. `Poll` is not one of them: it owns its
        // epoll descriptor from creation to drop, and the `AsyncFd` owns the `Poll`, which is
        // the whole contract of the `unsafe` replacement (and this crate has no `unsafe`).
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(Poll::new()?, tokio::io::Interest::READABLE)?;
        Ok(Self {
            poll,
            events: Events::with_capacity(EVENTS),
            pending: Slab::new(),
            deadlines: Vec::new(),
            seq: 0,
        })
    }

    /// Whether no connect is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Starts connecting to `addr` for `launch`. A result known at once (no socket, an error
    /// from `connect` itself) is returned instead of waiting for an event.
    pub(super) fn start(
        &mut self,
        addr: SocketAddr,
        half_open: bool,
        launch: Launch,
        timeout: Duration,
        permit: OwnedSemaphorePermit,
    ) -> Option<Done> {
        let started = launch.started;
        let failed = |launch: Launch, error: ProbeError| Done {
            idx: launch.idx,
            target: launch.target,
            started,
            skipped: launch.skipped,
            outcome: ProbeOutcome::down(started.elapsed(), error),
        };
        let socket = match open(addr, half_open) {
            Ok(socket) => socket,
            Err(e) => return Some(failed(launch, ProbeError::from_connect(&e))),
        };
        match socket.connect(&addr.into()) {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
            Ok(()) => {
                return Some(Done {
                    idx: launch.idx,
                    target: launch.target,
                    started,
                    skipped: launch.skipped,
                    outcome: ProbeOutcome::up(started.elapsed()),
                });
            }
            Err(e) => return Some(failed(launch, ProbeError::from_connect(&e))),
        }
        let entry = self.pending.vacant_entry();
        let slot = entry.key();
        let fd = socket.as_raw_fd();
        if let Err(e) = self.poll.get_ref().registry().register(
            &mut SourceFd(&fd),
            Token(slot),
            Interest::WRITABLE,
        ) {
            let error = ProbeError::new(
                FailureKind::Other,
                format!("cannot watch the connecting socket: {e}"),
            );
            return Some(failed(launch, error));
        }
        self.seq = self.seq.wrapping_add(1);
        let entry_deadline = (started + timeout, slot, self.seq);
        match self.deadlines.iter_mut().find(|(t, _)| *t == timeout) {
            Some((_, queue)) => queue.push_back(entry_deadline),
            None => self
                .deadlines
                .push((timeout, VecDeque::from([entry_deadline]))),
        }
        entry.insert(Pending {
            socket,
            launch,
            timeout,
            seq: self.seq,
            _permit: permit,
        });
        None
    }

    /// The earliest deadline of a connect in flight.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        let pending = &self.pending;
        self.deadlines
            .iter_mut()
            .filter_map(|(_, queue)| {
                // Drop the fronts whose connects are over.
                while let Some(&(deadline, slot, seq)) = queue.front() {
                    if pending.get(slot).is_some_and(|p| p.seq == seq) {
                        return Some(deadline);
                    }
                    queue.pop_front();
                }
                None
            })
            .min()
    }

    /// Ends every connect whose deadline is not after `now` with a timeout.
    pub(super) fn expire(&mut self, now: Instant, out: &mut Vec<Done>) {
        for (_, queue) in &mut self.deadlines {
            while let Some(&(deadline, slot, seq)) = queue.front() {
                if deadline > now {
                    break;
                }
                queue.pop_front();
                if self.pending.get(slot).is_some_and(|p| p.seq == seq) {
                    let pending = self.pending.remove(slot);
                    let outcome = ProbeOutcome::down(
                        now.saturating_duration_since(pending.launch.started),
                        ProbeError::timeout(pending.timeout),
                    );
                    out.push(pending.done(outcome));
                }
            }
        }
        // A timeout value no target uses any more (targets come and go) leaves its queue.
        self.deadlines.retain(|(_, queue)| !queue.is_empty());
    }

    /// Waits until some connect has finished, then collects every finished one into `out`.
    /// Cancel-safe: nothing is taken before the wait is over. An error means the runtime's I/O
    /// driver is gone (the runtime is shutting down).
    pub(super) async fn collect(&mut self, out: &mut Vec<Done>) -> io::Result<()> {
        let mut ready = self.poll.readable_mut().await?;
        loop {
            match ready
                .get_inner_mut()
                .poll(&mut self.events, Some(Duration::ZERO))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let mut seen = 0;
            for event in &self.events {
                seen += 1;
                let Some(pending) = self.pending.try_remove(event.token().0) else {
                    continue;
                };
                let latency = now.saturating_duration_since(pending.launch.started);
                let outcome = match pending.socket.take_error() {
                    Ok(None) => ProbeOutcome::up(latency),
                    Ok(Some(e)) | Err(e) => {
                        ProbeOutcome::down(latency, ProbeError::from_connect(&e))
                    }
                };
                out.push(pending.done(outcome));
            }
            if seen < EVENTS {
                // Every event is taken: wait for the runtime to report the epoll readable again.
                ready.clear_ready();
                return Ok(());
            }
        }
    }
}

/// A non-blocking TCP socket for `addr`, armed to reset on close (and to hold back the
/// handshake's final ACK for a half-open check).
fn open(addr: SocketAddr, half_open: bool) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // Failing to set either only costs a TIME_WAIT entry or a completed handshake, never the
    // verdict.
    let _ = socket.set_linger(Some(Duration::ZERO));
    if half_open {
        let _ = socket.set_tcp_quickack(false);
    }
    Ok(socket)
}
