//! The scheduler with the real prober against loopback targets, in real time: a target that
//! starts refusing goes down and comes back up, its neighbours undisturbed. Behaviour checks with
//! generous bounds, not benchmarks; the exact timing is checked in `tests/scheduler.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fixtures::targets::{AcceptingTarget, HangingTarget, ToggleTarget};
use probe_core::{
    Check, FailureKind, Health, HealthTracker, ProbeEvent, ScheduleOptions, Scheduler, Target,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// interval 200 ms, fast_interval 50 ms, timeout 100 ms.
const OPTS: ScheduleOptions = ScheduleOptions {
    interval: Duration::from_millis(200),
    fast_interval: Duration::from_millis(50),
    jitter: 0.5,
    timeout: Duration::from_millis(100),
};

/// Far above the expected times, so that a loaded machine does not fail the test.
const PATIENCE: Duration = Duration::from_secs(5);

fn target(name: &str, addr: SocketAddr) -> Target {
    Target::new("svc", name, addr.ip(), addr.port())
}

struct Running {
    events: mpsc::Receiver<ProbeEvent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn start(targets: &[(&str, SocketAddr)]) -> Running {
    let mut scheduler = Scheduler::new(16);
    let check = Arc::new(Check::tcp());
    for (name, addr) in targets {
        let tracker = HealthTracker::new(2, 2);
        scheduler.add(target(name, *addr), Arc::clone(&check), tracker, OPTS);
    }
    let (tx, events) = mpsc::channel(256);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(tx, async {
        let _ = stopped.await;
    }));
    Running { events, stop, task }
}

impl Running {
    /// Waits for `name` to turn `to`; returns when, and every event seen on the way.
    async fn until(&mut self, name: &str, to: Health) -> (Instant, Vec<ProbeEvent>) {
        let mut seen = Vec::new();
        let wait = async {
            while let Some(event) = self.events.recv().await {
                let hit = event
                    .transition
                    .filter(|t| &*event.target.name == name && t.to == to);
                seen.push(event);
                if let Some(t) = hit {
                    return t.at;
                }
            }
            panic!("the scheduler stopped");
        };
        let at = timeout(PATIENCE, wait).await.unwrap();
        (at, seen)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(1), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_target_goes_down_and_comes_back() {
    let mut toggle = ToggleTarget::start().await.unwrap();
    let steady = AcceptingTarget::start().await.unwrap();
    let mut run = start(&[("toggle", toggle.addr()), ("steady", steady.addr())]);

    run.until("toggle", Health::Up).await;
    toggle.refuse().await;
    let broke = Instant::now();
    let (down, seen) = run.until("toggle", Health::Down).await;
    let detection = down - broke;
    // Expected: at most interval + (fall-1) × fast_interval = 250 ms, plus scheduling noise.
    eprintln!("down {detection:?} after refusing");
    let failures: Vec<_> = seen
        .iter()
        .filter(|e| &*e.target.name == "toggle" && !e.outcome.up)
        .collect();
    assert_eq!(failures.len(), 2, "fall = 2");
    assert!(
        failures
            .iter()
            .all(|e| e.outcome.failure_kind() == Some(FailureKind::Refused))
    );

    toggle.accept().await.unwrap();
    let fixed = Instant::now();
    let (up, seen) = run.until("toggle", Health::Up).await;
    eprintln!("up {:?} after accepting again", up - fixed);
    let steady_events: Vec<_> = seen
        .iter()
        .filter(|e| &*e.target.name == "steady")
        .collect();
    assert!(
        steady_events
            .iter()
            .all(|e| e.outcome.up && e.health() == Health::Up)
    );

    run.stop().await;
    assert!(steady.accepted() >= 2);
}

/// A target that never answers: the first probe's timeout decides (cold start), and the scheduler
/// shuts down promptly with its probe in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_target_is_down_after_its_timeout() {
    let hanging = HangingTarget::start().await.unwrap();
    let steady = AcceptingTarget::start().await.unwrap();
    let started = Instant::now();
    let mut run = start(&[("hanging", hanging.addr()), ("steady", steady.addr())]);
    let (down, seen) = run.until("hanging", Health::Down).await;
    assert!(down - started >= OPTS.timeout);
    let event = seen.iter().find(|e| &*e.target.name == "hanging").unwrap();
    assert_eq!(event.outcome.failure_kind(), Some(FailureKind::Timeout));
    run.stop().await;
}
