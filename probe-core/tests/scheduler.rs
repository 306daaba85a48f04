//! The scheduler's timing rules, with a scripted fake probe under paused time: every instant
//! below is exact up to the timer's 1 ms resolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scheduler_fake;

use std::collections::HashMap;
use std::sync::Arc;

use probe_core::{Check, FailureKind, Health, HealthTracker, ProbeEvent, Scheduler};
use scheduler_fake::{Act, Fake, MS, TICK, close, opts, run_for, scheduler, target};
use tokio::time::{Instant, sleep_until};

/// The first transition of `port` to `to` after `after`.
fn transition_at(events: &[ProbeEvent], port: u16, to: Health, after: Instant) -> Instant {
    events
        .iter()
        .filter(|e| e.target.port == port)
        .filter_map(|e| e.transition)
        .find(|t| t.to == to && t.at > after)
        .map(|t| t.at)
        .unwrap_or_else(|| panic!("port {port} never went {to} after the change"))
}

/// 1,000 targets, 1 s interval, jitter 0.5, for 10.8 s: each target exactly once per interval on
/// its own grid, the first round within 500 ms, no burst.
#[tokio::test(start_paused = true)]
async fn steady_state_is_once_per_interval_and_spread() {
    let fake = Fake::default();
    let n = 1000u16;
    let s = scheduler(
        &fake,
        1024,
        1..=n,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 0.5, 500),
    );
    let t0 = Instant::now();
    let events = run_for(s, 10_800 * MS).await;

    let mut per_bucket = HashMap::<u128, usize>::new();
    for port in 1..=n {
        let starts = fake.starts_of(port);
        assert_eq!(starts.len(), 11, "port {port}");
        let phase = starts[0] - t0;
        assert!(phase <= 500 * MS, "port {port} first probe at {phase:?}");
        for (k, start) in starts.iter().enumerate() {
            let want = phase + 1000 * MS * u32::try_from(k).unwrap();
            assert!(close(*start - t0, want), "port {port} probe {k}");
            *per_bucket
                .entry((*start - t0).as_millis() / 10)
                .or_default() += 1;
        }
    }
    // 20 first probes per 10 ms on average; stratified phases keep every bucket near that.
    let max = per_bucket.values().max().copied().unwrap();
    eprintln!("steady: max {max} probe starts in a 10 ms bucket (mean 20)");
    assert!(max <= 30, "a 10 ms bucket holds {max} probe starts");
    assert_eq!(events.len(), 11 * usize::from(n));
    assert!(events.iter().all(|e| e.health() == Health::Up));
    assert_eq!(
        events.iter().filter(|e| e.transition.is_some()).count(),
        usize::from(n)
    );
}

/// Fails (`act`) right after the regular probe at 2 s; returns the fake, the events, t0 and the
/// moment of the change. interval 2 s, fast 200 ms, timeout 3 s, rise 2, fall 3, jitter 0.
async fn break_at_2s(first: Act, then: Act) -> (Fake, Vec<ProbeEvent>, Instant, Instant) {
    let fake = Fake::default();
    fake.set(1, first);
    let s = scheduler(
        &fake,
        64,
        [1, 2],
        &HealthTracker::new(2, 3),
        opts(2000, 200, 0.0, 3000),
    );
    let t0 = Instant::now();
    let change = t0 + 2002 * MS;
    let switch = fake.clone();
    tokio::spawn(async move {
        sleep_until(change).await;
        switch.set(1, then);
    });
    let events = run_for(s, 11_000 * MS).await;
    (fake, events, t0, change)
}

#[tokio::test(start_paused = true)]
async fn refusing_target_is_down_within_interval_plus_confirmations() {
    let (fake, events, t0, change) = break_at_2s(Act::Up(MS), Act::Refuse(MS)).await;
    let down = transition_at(&events, 1, Health::Down, t0);
    // Worst case: it broke just after a probe. Bound: I + (fall-1)·F = 2.4 s, plus 1 ms latency.
    let detection = down - change;
    eprintln!("refusing: down {detection:?} after the change");
    assert!(detection <= 2400 * MS + 2 * TICK, "{detection:?}");
    let starts: Vec<_> = fake
        .starts_of(1)
        .into_iter()
        .filter(|s| *s > change)
        .collect();
    // Regular probe at 4 s, confirmations at 4.2 s and 4.4 s, then back on the grid.
    for (start, want) in starts.iter().zip([4000, 4200, 4400, 6000, 8000, 10_000]) {
        assert!(
            close(*start - t0, want * MS),
            "{:?} != {want} ms",
            *start - t0
        );
    }
    // The healthy neighbour never noticed.
    assert_eq!(fake.starts_of(2).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn hanging_target_is_confirmed_while_its_first_probe_hangs() {
    let (fake, events, t0, change) = break_at_2s(Act::Up(MS), Act::Hang).await;
    let down = transition_at(&events, 1, Health::Down, t0);
    // Bound: I + T + (fall-1)·F = 5.4 s (HAProxy's sequential confirmations: about 11 s).
    let detection = down - change;
    eprintln!("hanging: down {detection:?} after the change");
    assert!(detection <= 5400 * MS + TICK, "{detection:?}");
    let max_per_target = fake.0.lock().unwrap().max_per_port[&1];
    assert_eq!(
        max_per_target, 3,
        "fall = 3 probes of the hanging target at once"
    );
    let starts: Vec<_> = fake
        .starts_of(1)
        .into_iter()
        .filter(|s| *s > change)
        .collect();
    for (start, want) in starts.iter().zip([4000, 4200, 4400]) {
        assert!(
            close(*start - t0, want * MS),
            "{:?} != {want} ms",
            *start - t0
        );
    }
    let failures = events
        .iter()
        .filter(|e| e.target.port == 1 && !e.outcome.up);
    assert!(
        failures
            .clone()
            .all(|e| e.outcome.failure_kind() == Some(FailureKind::Timeout))
    );
}

#[tokio::test(start_paused = true)]
async fn recovered_target_is_up_after_rise_successes() {
    let (fake, events, t0, change) = break_at_2s(Act::Refuse(MS), Act::Up(MS)).await;
    // Cold start: the first result (a refusal) decides at once.
    let first = events.iter().find(|e| e.target.port == 1).unwrap();
    assert_eq!(first.transition.map(|t| t.to), Some(Health::Down));
    assert!(close(first.finished - t0, MS));
    let up = transition_at(&events, 1, Health::Up, t0);
    // Bound: I + (rise-1)·F = 2.2 s, plus 1 ms latency.
    let recovery = up - change;
    eprintln!("recovering: up {recovery:?} after the change");
    assert!(recovery <= 2200 * MS + 2 * TICK, "{recovery:?}");
    let starts: Vec<_> = fake
        .starts_of(1)
        .into_iter()
        .filter(|s| *s > change)
        .collect();
    assert!(close(starts[1] - starts[0], 200 * MS));
}

/// A restored tracker continues with rise/fall: a restored Up target that refuses from the start
/// needs `fall` failures.
#[tokio::test(start_paused = true)]
async fn restored_state_needs_fall_failures() {
    let fake = Fake::default();
    fake.set(1, Act::Refuse(MS));
    let restored = HealthTracker::restore(2, 3, Health::Up, None);
    let s = scheduler(&fake, 8, [1], &restored, opts(2000, 200, 0.0, 3000));
    let t0 = Instant::now();
    let events = run_for(s, 1000 * MS).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.health(), e.transition.is_some()))
        .collect();
    let (up, down) = ((Health::Up, false), (Health::Down, true));
    assert_eq!(kinds[..3], [up, up, down]);
    assert!(close(events[2].finished - t0, 401 * MS));
    assert_eq!(events[1].tracker.consecutive_failures(), 2);
}

/// A static target gets one up event at the start and is never probed.
#[tokio::test(start_paused = true)]
async fn static_targets_report_once() {
    let fake = Fake::default();
    let mut s = Scheduler::with_probe(8, fake.clone());
    let id = s.add(
        target(7),
        Arc::new(Check::Static),
        HealthTracker::new(2, 3),
        opts(1000, 100, 0.1, 500),
    );
    s.add(
        target(8),
        Arc::new(Check::tcp()),
        HealthTracker::new(2, 3),
        opts(1000, 100, 0.1, 500),
    );
    let t0 = Instant::now();
    let events = run_for(s, 5000 * MS).await;
    let statics: Vec<_> = events.iter().filter(|e| e.id == id).collect();
    assert_eq!(statics.len(), 1);
    assert_eq!((statics[0].started, statics[0].health()), (t0, Health::Up));
    assert_eq!(statics[0].transition.map(|t| t.from), Some(Health::Unknown));
    assert!(fake.starts_of(7).is_empty());
    assert_eq!(fake.starts_of(8).len(), 5);
}
