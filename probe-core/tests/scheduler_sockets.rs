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

/// Runs `targets` with `check` until every one of them has reported `rounds` results.
async fn results(targets: &[(&str, SocketAddr)], check: Check, rounds: usize) -> Vec<ProbeEvent> {
    let mut scheduler = Scheduler::new(16);
    let check = Arc::new(check);
    for (name, addr) in targets {
        let tracker = HealthTracker::new(1, 1);
        scheduler.add(target(name, *addr), Arc::clone(&check), tracker, OPTS);
    }
    let (tx, mut events) = mpsc::channel(256);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(tx, async {
        let _ = stopped.await;
    }));
    let mut seen = Vec::new();
    let wait = async {
        while let Some(event) = events.recv().await {
            seen.push(event);
            let done = targets.iter().all(|(name, _)| {
                seen.iter().filter(|e| &*e.target.name == *name).count() >= rounds
            });
            if done {
                return;
            }
        }
    };
    timeout(PATIENCE, wait).await.unwrap();
    let _ = stop.send(());
    timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    seen
}

/// Plain connect checks run in the scheduler's own loop (issue 15); what they report must be
/// what the prober reports for the same target: up with a latency, refused, timed out after the
/// target's timeout, with the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connects_report_what_the_prober_reports() {
    let accepting = AcceptingTarget::start().await.unwrap();
    let mut refusing = ToggleTarget::start().await.unwrap();
    refusing.refuse().await;
    let hanging = HangingTarget::start().await.unwrap();
    let targets = [
        ("accepting", accepting.addr()),
        ("refusing", refusing.addr()),
        ("hanging", hanging.addr()),
    ];
    let seen = results(&targets, Check::tcp(), 3).await;
    let prober = probe_core::Prober::new(probe_core::ProberOptions {
        timeout: OPTS.timeout,
        concurrency: 4,
    });
    for (name, addr) in targets {
        let direct: Vec<_> = seen.iter().filter(|e| &*e.target.name == name).collect();
        let through_prober = prober.probe(&target(name, addr), &Check::tcp()).await;
        for event in direct {
            assert_eq!(event.outcome.up, through_prober.up, "{name}: {event:?}");
            assert_eq!(
                event.outcome.error.as_ref().map(ToString::to_string),
                through_prober.error.as_ref().map(ToString::to_string),
                "{name}"
            );
            if name == "hanging" {
                // The timeout counts from the probe's start, not from a later poll.
                assert!(event.outcome.latency >= OPTS.timeout, "{event:?}");
                assert!(event.outcome.latency < OPTS.timeout * 3, "{event:?}");
            }
        }
    }
    assert!(accepting.accepted() >= 3, "full handshakes are accepted");
}

/// A half-open check through the scheduler: up, and the target's application never accepts a
/// connection; over IPv6 too, where the machine has `::1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_plain_connects_are_never_accepted() {
    let v4 = AcceptingTarget::start().await.unwrap();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let mut targets = vec![("v4", v4.addr())];
    if let Some(listener) = &v6 {
        targets.push(("v6", listener.local_addr().unwrap()));
    } else {
        eprintln!("no ::1 on this machine: IPv6 not checked");
    }
    let check = Check::Tcp(probe_core::TcpCheck {
        half_open: true,
        ..probe_core::TcpCheck::connect()
    });
    let seen = results(&targets, check, 3).await;
    assert!(seen.iter().all(|e| e.outcome.up), "{seen:?}");
    assert_eq!(v4.accepted(), 0, "a half-open check must never be accepted");
    if let Some(listener) = v6 {
        listener.set_nonblocking(true).unwrap();
        assert!(
            listener.accept().is_err(),
            "nothing reached the IPv6 accept queue"
        );
    }
}

/// Targets with different timeouts in one scheduler: each plain connect times out after its
/// own target's timeout, whichever started first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plain_connect_times_out_after_its_own_timeout() {
    let hanging = HangingTarget::start().await.unwrap();
    let mut scheduler = Scheduler::new(16);
    let check = Arc::new(Check::tcp());
    let timeouts = [("slow", 300), ("quick", 60)];
    for (name, ms) in timeouts {
        let opts = ScheduleOptions {
            timeout: Duration::from_millis(ms),
            jitter: 0.0,
            ..OPTS
        };
        let tracker = HealthTracker::new(1, 1);
        scheduler.add(
            target(name, hanging.addr()),
            Arc::clone(&check),
            tracker,
            opts,
        );
    }
    let (tx, mut events) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(scheduler.run(tx, async {
        let _ = stopped.await;
    }));
    let mut first = std::collections::HashMap::new();
    while first.len() < 2 {
        let event = timeout(PATIENCE, events.recv()).await.unwrap().unwrap();
        first.entry(event.target.name.to_string()).or_insert(event);
    }
    let _ = stop.send(());
    timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    for (name, ms) in timeouts {
        let event = &first[name];
        let want = Duration::from_millis(ms);
        assert_eq!(
            event.outcome.failure_kind(),
            Some(FailureKind::Timeout),
            "{event:?}"
        );
        assert!(event.outcome.latency >= want, "{name}: {event:?}");
        // Below 300 ms for the quick one: it must not wait behind the slow one's deadline.
        assert!(
            event.outcome.latency < want + Duration::from_millis(200),
            "{name}: {event:?}"
        );
    }
}
