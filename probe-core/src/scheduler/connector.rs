//! Plain connect checks run by the shard itself, without a task, a timer or a runtime
//! registration per probe, on sockets used again and again (issue 15).
//!
//! A plain TCP connect check ([`Probe::plain_connect`](super::Probe::plain_connect)) is nothing
//! but a non-blocking `connect` and one readiness event. Through tokio, each one costs a new
//! socket, a registration with the runtime's epoll (`epoll_ctl` to add and again to delete), a
//! slot in the runtime's I/O table, a timer-wheel entry for its timeout, a task in the shard's
//! `FuturesUnordered`, a wake-up of that task and a `close`. Here instead:
//!
//! - the shard owns a private epoll instance (a [`mio::Poll`]), registered **once** with the
//!   runtime as an [`AsyncFd`]: the runtime wakes the shard when any of its connects has news,
//!   and one non-blocking `epoll_wait` collects every finished connect at once;
//! - a socket, once made and added to that epoll, serves one connect after another: when a
//!   connect is over, `connect(AF_UNSPEC)` dissolves its connection (the kernel resets an
//!   established one, as closing with `SO_LINGER` 0 does, and gives the local port back) and
//!   the socket waits, still in the epoll, for the next probe of its address family. A check
//!   then costs `connect`, `getsockopt(SO_ERROR)` and that second `connect` (plus `TCP_QUICKACK`
//!   for a half-open one), where a socket of its own costs `socket`, two options, `connect`,
//!   `epoll_ctl`, `getsockopt` and `close`, whose set-up and tear-down are a quarter of the
//!   kernel's work per check. The idle sockets are never more than the most connects that were
//!   in flight at once, which the scheduler's concurrency bounds;
//! - timeouts are queues of deadlines inside the connector, one per timeout value (a shard
//!   starts its probes in time order, so each queue is sorted as it grows), read by the shard's
//!   one timer.
//!
//! An idle socket is in the kernel's `CLOSE` state, which epoll reports as nothing once a new
//! connect has begun (`SYN_SENT` has no readiness), so an event is always about the connect in
//! progress. The verdict comes from `SO_ERROR`, as connect(2) prescribes, and errors are
//! classified exactly as the other path classifies them.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::event::Event;
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

/// When a connect in flight times out: `(deadline, socket slot, seq)`.
type Deadline = (Instant, usize, u64);

/// The probe a socket is connecting for.
struct Pending {
    launch: Launch,
    timeout: Duration,
    /// Tells this connect from a later one on the same socket, for the deadline queues.
    seq: u64,
    /// Held until the connect is over: the scheduler's bound on probes in flight.
    _permit: OwnedSemaphorePermit,
}

impl Pending {
    fn done(self, outcome: ProbeOutcome) -> Done {
        done(self.launch, outcome)
    }
}

/// The result of `launch`'s probe, for the shard.
fn done(launch: Launch, outcome: ProbeOutcome) -> Done {
    Done {
        idx: launch.idx,
        target: launch.target,
        started: launch.started,
        skipped: launch.skipped,
        outcome,
    }
}

/// Whether the socket in `slot` is still connecting for the connect numbered `seq`.
fn is_live(conns: &Slab<Conn>, slot: usize, seq: u64) -> bool {
    conns
        .get(slot)
        .and_then(|c| c.pending.as_ref())
        .is_some_and(|p| p.seq == seq)
}

/// A socket of the connector, in its epoll under its slot's token for its whole life.
struct Conn {
    socket: Socket,
    v6: bool,
    /// The probe it is connecting for; `None` while it waits for the next one.
    pending: Option<Pending>,
}

/// The plain connects of one shard.
pub(super) struct Connector {
    poll: AsyncFd<Poll>,
    events: Events,
    conns: Slab<Conn>,
    /// Slots of the idle sockets: IPv4, IPv6.
    idle: [Vec<usize>; 2],
    /// Sockets with a connect in flight.
    busy: usize,
    /// Slots whose connects finished in one [`collect`](Self::collect), to dissolve after it.
    finished: Vec<usize>,
    /// Per timeout value, the deadlines in start order; entries of connects that already
    /// finished are skipped when they come to the front.
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
            conns: Slab::new(),
            idle: [Vec::new(), Vec::new()],
            busy: 0,
            finished: Vec::new(),
            deadlines: Vec::new(),
            seq: 0,
        })
    }

    /// Whether no connect is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.busy == 0
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
        let slot = match self.socket_for(addr) {
            Ok(slot) => slot,
            Err(e) => {
                let outcome = ProbeOutcome::down(started.elapsed(), ProbeError::from_connect(&e));
                return Some(done(launch, outcome));
            }
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            // `socket_for` returns a slot it holds; should that ever fail, the probe still ends.
            let error = ProbeError::new(FailureKind::Other, "the connector lost its socket");
            return Some(done(launch, ProbeOutcome::down(started.elapsed(), error)));
        };
        if half_open {
            // Per connect: dissolving the last connection reset the option. Failing to set it
            // only means a completed handshake: the same verdict, more work.
            let _ = conn.socket.set_tcp_quickack(false);
        }
        match conn.socket.connect(&addr.into()) {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINPROGRESS as i32) => {}
            result => {
                let outcome = match result {
                    Ok(()) => ProbeOutcome::up(started.elapsed()),
                    Err(e) => ProbeOutcome::down(started.elapsed(), ProbeError::from_connect(&e)),
                };
                self.release(slot);
                return Some(done(launch, outcome));
            }
        }
        self.seq = self.seq.wrapping_add(1);
        conn.pending = Some(Pending {
            launch,
            timeout,
            seq: self.seq,
            _permit: permit,
        });
        self.busy += 1;
        let deadline = (started + timeout, slot, self.seq);
        match self.deadlines.iter_mut().find(|(t, _)| *t == timeout) {
            Some((_, queue)) => queue.push_back(deadline),
            None => self.deadlines.push((timeout, VecDeque::from([deadline]))),
        }
        None
    }

    /// An idle socket of `addr`'s family, or a new one added to the epoll.
    fn socket_for(&mut self, addr: SocketAddr) -> io::Result<usize> {
        if let Some(slot) = self.idle[usize::from(addr.is_ipv6())].pop() {
            return Ok(slot);
        }
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking(),
            Some(Protocol::TCP),
        )?;
        // So that dropping the connector (shutdown) resets what is still connected. Failing to
        // set it only costs a TIME_WAIT entry then.
        let _ = socket.set_linger(Some(Duration::ZERO));
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        self.poll
            .get_ref()
            .registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                Token(slot),
                Interest::WRITABLE,
            )
            .map_err(|e| io::Error::other(format!("cannot watch the connecting socket: {e}")))?;
        entry.insert(Conn {
            socket,
            v6: addr.is_ipv6(),
            pending: None,
        });
        Ok(slot)
    }

    /// Dissolves the connection of the socket in `slot` (a reset if it was established) and
    /// keeps the socket for the next connect; a socket that cannot be dissolved is closed.
    fn release(&mut self, slot: usize) {
        let Some(conn) = self.conns.get(slot) else {
            return;
        };
        if rustix::net::connect_unspec(&conn.socket).is_ok() {
            self.idle[usize::from(conn.v6)].push(slot);
        } else {
            // Closing takes it out of the epoll too.
            self.conns.remove(slot);
        }
    }

    /// Ends the connect of `slot`, if it is the one numbered `seq`.
    fn finish(&mut self, slot: usize, seq: u64) -> Option<Pending> {
        if !is_live(&self.conns, slot, seq) {
            return None;
        }
        let pending = self.conns.get_mut(slot)?.pending.take()?;
        self.busy -= 1;
        Some(pending)
    }

    /// The earliest deadline of a connect in flight.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        let conns = &self.conns;
        self.deadlines
            .iter_mut()
            .filter_map(|(_, queue)| {
                // Drop the fronts whose connects are over.
                while let Some(&(deadline, slot, seq)) = queue.front() {
                    if is_live(conns, slot, seq) {
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
        let mut due = Vec::new();
        for (_, queue) in &mut self.deadlines {
            while let Some(&(deadline, slot, seq)) = queue.front() {
                if deadline > now {
                    break;
                }
                queue.pop_front();
                due.push((slot, seq));
            }
        }
        // A timeout value no target uses any more (targets come and go) leaves its queue.
        self.deadlines.retain(|(_, queue)| !queue.is_empty());
        for (slot, seq) in due {
            if let Some(pending) = self.finish(slot, seq) {
                self.release(slot);
                let outcome = ProbeOutcome::down(
                    now.saturating_duration_since(pending.launch.started),
                    ProbeError::timeout(pending.timeout),
                );
                out.push(pending.done(outcome));
            }
        }
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
                let slot = event.token().0;
                // An idle socket's own events (the end of its last connection) say nothing.
                let Some(conn) = self.conns.get_mut(slot) else {
                    continue;
                };
                let Some(pending) = conn.pending.take() else {
                    continue;
                };
                self.busy -= 1;
                let latency = now.saturating_duration_since(pending.launch.started);
                let outcome = verdict(&conn.socket, event, latency);
                self.finished.push(slot);
                out.push(pending.done(outcome));
            }
            if seen < EVENTS {
                // Every event is taken: wait for the runtime to report the epoll readable again.
                ready.clear_ready();
                break;
            }
        }
        drop(ready);
        let mut finished = std::mem::take(&mut self.finished);
        for slot in finished.drain(..) {
            self.release(slot);
        }
        self.finished = finished;
        Ok(())
    }
}

/// What a readiness event says about a connect in progress: `SO_ERROR` first, as connect(2)
/// prescribes; without an error, connected when the socket is writable and not hung up (and,
/// should an event ever say neither, when it has a peer).
fn verdict(socket: &Socket, event: &Event, latency: Duration) -> ProbeOutcome {
    match socket.take_error() {
        Ok(Some(e)) | Err(e) => ProbeOutcome::down(latency, ProbeError::from_connect(&e)),
        Ok(None) if event.is_writable() && !event.is_write_closed() => ProbeOutcome::up(latency),
        Ok(None) => match socket.peer_addr() {
            Ok(_) => ProbeOutcome::up(latency),
            Err(e) => ProbeOutcome::down(
                latency,
                ProbeError::new(FailureKind::Other, format!("the connection failed: {e}")),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use fixtures::targets::{AcceptingTarget, HangingTarget, ToggleTarget};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::{Check, Target};

    const TIMEOUT: Duration = Duration::from_millis(100);

    /// One probe through `connector`, waited for as the shard waits: events or the deadline.
    async fn probe(connector: &mut Connector, addr: SocketAddr, half_open: bool) -> ProbeOutcome {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let launch = Launch {
            idx: 0,
            target: Target::new("svc", "t", addr.ip(), addr.port()),
            check: Arc::new(Check::tcp()),
            timeout: TIMEOUT,
            started: Instant::now(),
            skipped: 0,
        };
        if let Some(done) = connector.start(addr, half_open, launch, TIMEOUT, permit) {
            return done.outcome;
        }
        let mut out = Vec::new();
        loop {
            let deadline = connector.next_deadline().unwrap();
            tokio::select! {
                collected = connector.collect(&mut out) => collected.unwrap(),
                () = tokio::time::sleep_until(deadline) => connector.expire(Instant::now(), &mut out),
            }
            if let Some(done) = out.pop() {
                assert!(connector.is_empty());
                return done.outcome;
            }
        }
    }

    /// The reuse of one socket must never carry anything from one connect to the next: every
    /// kind of result, in every order, on the same socket, gives the verdict of a fresh one.
    #[tokio::test]
    async fn one_socket_serves_every_kind_of_result_in_turn() {
        let accepting = AcceptingTarget::start().await.unwrap();
        let mut refusing = ToggleTarget::start().await.unwrap();
        refusing.refuse().await;
        let hanging = HangingTarget::start().await.unwrap();
        let (up, refused, timed_out) = (
            (accepting.addr(), None),
            (refusing.addr(), Some(FailureKind::Refused)),
            (hanging.addr(), Some(FailureKind::Timeout)),
        );
        let mut connector = Connector::new().unwrap();
        let order = [
            up, refused, up, timed_out, up, refused, timed_out, refused, up, up, timed_out, up,
        ];
        for (i, (addr, want)) in order.into_iter().enumerate() {
            for half_open in [false, true] {
                let outcome = probe(&mut connector, addr, half_open).await;
                assert_eq!(
                    outcome.failure_kind(),
                    want,
                    "probe {i} (half-open {half_open}) of {addr}: {outcome:?}"
                );
                assert_eq!(outcome.up, want.is_none());
            }
        }
        assert_eq!(connector.conns.len(), 1, "one socket served every probe");
        // Six full handshakes; the six half-open ones are never accepted. The target's accept
        // thread may lag the verdicts a little.
        let waited = Instant::now();
        while accepting.accepted() < 6 && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            accepting.accepted(),
            6,
            "the full handshakes, and only those, were accepted"
        );
    }

    /// IPv4 and IPv6 sockets are kept apart (where the machine has `::1`).
    #[tokio::test]
    async fn each_address_family_has_its_own_sockets() {
        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("no ::1 on this machine: skipped");
            return;
        };
        let v4 = AcceptingTarget::start().await.unwrap();
        let mut connector = Connector::new().unwrap();
        for _ in 0..3 {
            for addr in [v4.addr(), v6.local_addr().unwrap()] {
                let outcome = probe(&mut connector, addr, false).await;
                assert!(outcome.up, "{addr}: {outcome:?}");
            }
        }
        assert_eq!(connector.conns.len(), 2);
    }
}
