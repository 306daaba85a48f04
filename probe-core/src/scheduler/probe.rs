//! The seam between the scheduler and whatever runs one probe.

use std::future::Future;
use std::time::Duration;

use crate::check::Check;
use crate::outcome::ProbeOutcome;
use crate::prober::Prober;
use crate::target::Target;

/// Runs one probe of one target: what the [`Scheduler`](super::Scheduler) calls whenever a probe is
/// due.
///
/// [`Prober`] is the real implementation (and the default). Tests implement it, or wrap a closure
/// with [`probe_fn`], to script results and latencies under paused `tokio::time`; a daemon could
/// wrap a `Prober` to add its own bookkeeping.
///
/// The scheduler bounds concurrency itself, so an implementation should not queue; `timeout` is
/// the target's [`ScheduleOptions::timeout`](super::ScheduleOptions::timeout), and the returned
/// future should resolve within it (the scheduler does not add a timeout of its own: that would
/// cost a second timer per probe).
pub trait Probe: Send + Sync + 'static {
    /// Probes `target` with `check`, giving up after `timeout`.
    fn probe(
        &self,
        target: &Target,
        check: &Check,
        timeout: Duration,
    ) -> impl Future<Output = ProbeOutcome> + Send;

    /// Whether the scheduler may run `check` itself as a plain TCP connect instead of calling
    /// [`probe`](Probe::probe): `Some(half_open)` for a connect check with nothing to send and
    /// nothing to expect ([`TcpCheck::half_open`](crate::TcpCheck::half_open)).
    ///
    /// The scheduler then connects from its own loop, on an epoll instance of its own, with
    /// none of the per-probe task, timer and runtime registration a future costs: the check
    /// most targets use, at the least CPU (issue 15). The verdicts and error messages are the
    /// same as [`Prober`]'s. The default, `None`, sends every probe through `probe` (what a
    /// scripted or wrapping implementation wants); [`Prober`] says yes to plain connects, which
    /// then count against the scheduler's concurrency, not the prober's own.
    fn plain_connect(&self, check: &Check) -> Option<bool> {
        let _ = check;
        None
    }
}

/// The real probes, through [`Prober::probe_with_timeout`]. A prober made with the scheduler's
/// concurrency never waits for its own permit (the scheduler holds probes back first), so the
/// prober's semaphore costs one uncontended atomic operation per probe.
impl Probe for Prober {
    fn probe(
        &self,
        target: &Target,
        check: &Check,
        timeout: Duration,
    ) -> impl Future<Output = ProbeOutcome> + Send {
        self.probe_with_timeout(target, check, timeout)
    }

    fn plain_connect(&self, check: &Check) -> Option<bool> {
        match check {
            Check::Tcp(tcp) if tcp.send.is_none() && tcp.expect.is_none() => Some(tcp.half_open),
            _ => None,
        }
    }
}

/// A [`Probe`] made from a closure; see [`probe_fn`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeFn<F>(F);

/// Wraps a closure as a [`Probe`]. The future it returns must own what it needs (clone the target
/// if it must outlive the call).
///
/// ```
/// use std::time::Duration;
///
/// use probe_core::{FailureKind, ProbeError, ProbeOutcome, Scheduler, probe_fn};
///
/// // Every target with an odd port refuses after 1 ms; the others answer after 2 ms.
/// let fake = probe_fn(|target, _check, _timeout| {
///     let up = target.port % 2 == 0;
///     async move {
///         if up {
///             tokio::time::sleep(Duration::from_millis(2)).await;
///             ProbeOutcome::up(Duration::from_millis(2))
///         } else {
///             tokio::time::sleep(Duration::from_millis(1)).await;
///             let refused = ProbeError::new(FailureKind::Refused, "connection refused");
///             ProbeOutcome::down(Duration::from_millis(1), refused)
///         }
///     }
/// });
/// let scheduler = Scheduler::with_probe(64, fake);
/// assert!(scheduler.is_empty());
/// ```
pub fn probe_fn<F, Fut>(f: F) -> ProbeFn<F>
where
    F: Fn(&Target, &Check, Duration) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    ProbeFn(f)
}

impl<F, Fut> Probe for ProbeFn<F>
where
    F: Fn(&Target, &Check, Duration) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ProbeOutcome> + Send + 'static,
{
    fn probe(
        &self,
        target: &Target,
        check: &Check,
        timeout: Duration,
    ) -> impl Future<Output = ProbeOutcome> + Send {
        (self.0)(target, check, timeout)
    }
}
