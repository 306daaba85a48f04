//! The scheduler's limits: the concurrency cap, hanging targets, shutdown and a slow receiver,
//! with the scripted fake probe (paused time unless the test says otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scheduler_fake;

use std::time::Duration;

use probe_core::HealthTracker;
use scheduler_fake::{Act, Fake, MS, close, opts, run_for, scheduler};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};

/// 300 targets all due at once (jitter 0), 50 ms probes, concurrency 16: never more than 16 in
/// flight, the queue drains in about 0.94 s, and every round still starts on the grid.
#[tokio::test(start_paused = true)]
async fn concurrency_cap_holds_and_queued_probes_keep_the_grid() {
    let fake = Fake::default();
    for port in 1..=300 {
        fake.set(port, Act::Up(50 * MS));
    }
    let s = scheduler(
        &fake,
        16,
        1..=300,
        &HealthTracker::new(2, 3),
        opts(2000, 200, 0.0, 3000),
    );
    let t0 = Instant::now();
    let events = run_for(s, 9000 * MS).await;
    assert_eq!(fake.0.lock().unwrap().max_in_flight, 16);
    let mut latest = Duration::ZERO;
    for port in 1..=300 {
        let starts = fake.starts_of(port);
        assert_eq!(starts.len(), 5, "port {port}: once per round");
        for (k, start) in starts.iter().enumerate() {
            let slot = 2000 * MS * u32::try_from(k).unwrap();
            let waited = *start - t0 - slot;
            assert!(
                waited < 1000 * MS,
                "port {port} round {k} waited {waited:?}"
            );
            latest = latest.max(waited);
        }
    }
    // 300 × 50 ms / 16 ≈ 0.94 s of work per round.
    eprintln!("cap: longest wait for a permit {latest:?}");
    assert!(latest >= 900 * MS, "{latest:?}");
    assert_eq!(events.len(), 1500);
}

/// Ten hanging targets hold ten permits for their timeout; the other 100 stay on their grid.
#[tokio::test(start_paused = true)]
async fn hanging_targets_never_delay_the_others() {
    let fake = Fake::default();
    for port in 1..=10 {
        fake.set(port, Act::Hang);
    }
    let s = scheduler(
        &fake,
        32,
        1..=110,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 0.5, 2500),
    );
    let t0 = Instant::now();
    run_for(s, 8000 * MS).await;
    for port in 11..=110 {
        let starts = fake.starts_of(port);
        assert_eq!(starts.len(), 8, "port {port}");
        for (k, start) in starts.iter().enumerate().skip(1) {
            let want = starts[0] - t0 + 1000 * MS * u32::try_from(k).unwrap();
            assert!(close(*start - t0, want), "port {port} probe {k}");
        }
    }
    // A hanging target keeps one probe in flight (2.5 s); the slots meanwhile are skipped.
    assert_eq!(fake.starts_of(1).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_probes_in_flight_and_returns_at_once() {
    let fake = Fake::default();
    for port in 1..=10 {
        fake.set(port, Act::Hang);
    }
    let s = scheduler(
        &fake,
        64,
        1..=10,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 0.0, 3_600_000),
    );
    let (tx, mut rx) = mpsc::channel(16);
    let t0 = Instant::now();
    s.run(tx, sleep(1000 * MS)).await;
    assert_eq!(Instant::now() - t0, 1000 * MS);
    let log = fake.0.lock().unwrap();
    assert_eq!(
        (log.starts.len(), log.cancelled, log.in_flight),
        (10, 10, 0)
    );
    assert!(rx.try_recv().is_err());
}

/// A receiver that stops reading holds probing back after a channel's worth of queued events;
/// nothing is lost, and probing catches up when it reads again.
#[tokio::test(start_paused = true)]
async fn slow_receiver_applies_backpressure() {
    let fake = Fake::default();
    let s = scheduler(
        &fake,
        64,
        1..=100,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 1.0, 500),
    );
    let (tx, mut rx) = mpsc::channel(4);
    let run = tokio::spawn(s.run(tx, sleep(10_500 * MS)));
    sleep(5000 * MS).await;
    let started_while_blocked = fake.0.lock().unwrap().starts.len();
    // 4 in the channel + 4 queued in the shard (+ at most the probes in flight then).
    eprintln!("backpressure: {started_while_blocked} probes started while blocked");
    assert!(started_while_blocked <= 8 + 64, "{started_while_blocked}");
    let mut events = 0;
    while rx.recv().await.is_some() {
        events += 1;
    }
    run.await.unwrap();
    let log = fake.0.lock().unwrap();
    // Only probes cancelled by the shutdown went unreported.
    assert_eq!(events + log.cancelled, log.starts.len());
    let events = log.starts.len();
    eprintln!("backpressure: {events} probes in 10.5 s");
    assert!(events >= 500, "{events}");
}

/// Dropping the receiver ends `run`.
#[tokio::test(start_paused = true)]
async fn run_returns_when_the_receiver_is_gone() {
    let fake = Fake::default();
    let s = scheduler(
        &fake,
        8,
        1..=3,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 0.0, 500),
    );
    let (tx, rx) = mpsc::channel(8);
    drop(rx);
    s.run(tx, std::future::pending()).await;
    assert!(fake.0.lock().unwrap().starts.len() <= 3);
}

/// On two worker threads the targets are split over two shards that share one set of permits:
/// the cap holds over both (real time, loose bounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_share_the_concurrency_cap() {
    let fake = Fake::default();
    for port in 1..=100 {
        fake.set(port, Act::Up(20 * MS));
    }
    let s = scheduler(
        &fake,
        8,
        1..=100,
        &HealthTracker::new(2, 3),
        opts(500, 100, 0.0, 300),
    );
    let events = run_for(s, 1200 * MS).await;
    let log = fake.0.lock().unwrap();
    assert_eq!(log.max_in_flight, 8);
    for port in 1..=100 {
        assert!(
            log.starts.iter().filter(|(p, _)| *p == port).count() >= 2,
            "port {port}"
        );
    }
    assert_eq!(events.len() + log.cancelled, log.starts.len());
}

/// A scheduler whose probe makes no plain connects needs no I/O driver: the shard's connector
/// (issue 15) is opened at the first plain connect only, so an embedder's runtime with timers
/// alone runs scripted probes as before.
#[test]
fn a_runtime_without_io_runs_probes_that_make_no_plain_connect() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let probe = probe_core::probe_fn(|_, _, _| async {
            sleep(5 * MS).await;
            probe_core::ProbeOutcome::up(5 * MS)
        });
        let mut scheduler = probe_core::Scheduler::with_probe(8, probe);
        let target = probe_core::Target::new("svc", "a", "127.0.0.1".parse().unwrap(), 1);
        let check = std::sync::Arc::new(probe_core::Check::tcp());
        scheduler.add(
            target,
            check,
            HealthTracker::new(1, 1),
            opts(100, 20, 0.0, 50),
        );
        let (tx, mut rx) = mpsc::channel(8);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(scheduler.run(tx, async {
            let _ = stopped.await;
        }));
        let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(event.outcome.up, "{event:?}");
        stop.send(()).unwrap();
        task.await.unwrap();
    });
}
