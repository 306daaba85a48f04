//! A scripted fake probe for the scheduler tests (`tests/scheduler.rs`,
//! `tests/scheduler_limits.rs`): targets, told apart by port, pass, refuse or hang as the test
//! says, and every start, the probes in flight and cancellations are recorded.
// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use probe_core::{
    Check, FailureKind, HealthTracker, Probe, ProbeError, ProbeEvent, ProbeOutcome,
    ScheduleOptions, Scheduler, Target,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

/// One millisecond.
pub const MS: Duration = Duration::from_millis(1);
/// Allowed error of an instant: the timer's resolution.
pub const TICK: Duration = Duration::from_millis(1);

/// What a fake target does when probed.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Passes after this latency.
    Up(Duration),
    /// Refused after this latency.
    Refuse(Duration),
    /// Drops packets: fails with a timeout after the probe's timeout.
    Hang,
}

/// What the fake saw.
#[derive(Default)]
pub struct Log {
    pub acts: HashMap<u16, Act>,
    /// (port, start) of every probe, in start order.
    pub starts: Vec<(u16, Instant)>,
    pub in_flight: usize,
    pub max_in_flight: usize,
    pub per_port: HashMap<u16, usize>,
    pub max_per_port: HashMap<u16, usize>,
    pub cancelled: usize,
}

/// A fake prober whose targets (told apart by port) do what the test says.
#[derive(Clone, Default)]
pub struct Fake(pub Arc<Mutex<Log>>);

impl Fake {
    pub fn set(&self, port: u16, act: Act) {
        self.0.lock().unwrap().acts.insert(port, act);
    }

    pub fn starts_of(&self, port: u16) -> Vec<Instant> {
        let log = self.0.lock().unwrap();
        log.starts
            .iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, t)| *t)
            .collect()
    }
}

/// Counts a probe out when it ends or is dropped.
struct Guard {
    fake: Fake,
    port: u16,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut log = self.fake.0.lock().unwrap();
        log.in_flight -= 1;
        *log.per_port.get_mut(&self.port).unwrap() -= 1;
        if !self.finished {
            log.cancelled += 1;
        }
    }
}

impl Probe for Fake {
    fn probe(
        &self,
        target: &Target,
        _check: &Check,
        timeout: Duration,
    ) -> impl Future<Output = ProbeOutcome> + Send {
        let port = target.port;
        let act = {
            let mut log = self.0.lock().unwrap();
            log.starts.push((port, Instant::now()));
            log.in_flight += 1;
            log.max_in_flight = log.max_in_flight.max(log.in_flight);
            let n = log.per_port.entry(port).or_default();
            *n += 1;
            let n = *n;
            let max = log.max_per_port.entry(port).or_default();
            *max = (*max).max(n);
            log.acts.get(&port).copied().unwrap_or(Act::Up(MS))
        };
        let guard = Guard {
            fake: self.clone(),
            port,
            finished: false,
        };
        async move {
            // Owned by the future, so dropping the future counts the probe as cancelled.
            let mut guard = guard;
            let outcome = match act {
                Act::Up(latency) => {
                    sleep(latency).await;
                    ProbeOutcome::up(latency)
                }
                Act::Refuse(latency) => {
                    sleep(latency).await;
                    let e = ProbeError::new(FailureKind::Refused, "connection refused");
                    ProbeOutcome::down(latency, e)
                }
                Act::Hang => {
                    sleep(timeout).await;
                    ProbeOutcome::down(timeout, ProbeError::timeout(timeout))
                }
            };
            guard.finished = true;
            outcome
        }
    }
}

pub fn opts(interval: u64, fast: u64, jitter: f64, timeout: u64) -> ScheduleOptions {
    ScheduleOptions {
        interval: Duration::from_millis(interval),
        fast_interval: Duration::from_millis(fast),
        jitter,
        timeout: Duration::from_millis(timeout),
    }
}

pub fn target(port: u16) -> Target {
    Target::new(
        "svc",
        format!("n{port}"),
        "127.0.0.1".parse().unwrap(),
        port,
    )
}

/// A scheduler of `ports`, all with `tracker` and `opts`.
pub fn scheduler(
    fake: &Fake,
    concurrency: usize,
    ports: impl IntoIterator<Item = u16>,
    tracker: &HealthTracker,
    opts: ScheduleOptions,
) -> Scheduler<Fake> {
    let mut s = Scheduler::with_probe(concurrency, fake.clone());
    let check = Arc::new(Check::tcp());
    for port in ports {
        s.add(target(port), Arc::clone(&check), tracker.clone(), opts);
    }
    s
}

/// Runs `s` for `duration` from `t0` (now) and returns every event.
pub async fn run_for<P: Probe>(s: Scheduler<P>, duration: Duration) -> Vec<ProbeEvent> {
    let (tx, mut rx) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    s.run(tx, sleep(duration)).await;
    collect.await.unwrap()
}

pub fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= TICK
}
